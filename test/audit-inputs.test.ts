import t from 'tap'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { Pki, type SvidFiles } from './helpers/mesh.ts'
import { readLines, writeLines, parse, signerFrom, decisionFields, verifyInProcess } from './helpers/audit-log.ts'
import { DecisionLog } from '../src/audit/record.ts'
import type { ChainReport } from '../src/audit/verify.ts'
import { tempDir } from './helpers/files.ts'
import { prng } from './helpers/prng.ts'

// The sidecar's real output (DecisionLog, three workloads) through what a cluster does to it before
// an auditor gets it: the kubelet's CRI wrapping (long lines cut into P parts, stderr mixed in),
// Docker's json-file, a shipper (Fluent Bit) parsing and re-serializing every record, rotation with
// gzip, many sidecars merged into one stream, a head rotated away. Each verifies; tampering on top
// of the transformation is still caught, with the right verdict.

const CALLER = 'spiffe://example.org/ns/web/sa/frontend'
const EVERY = 20
const N = 150
const OP_LINES = [
  '{"level":30,"time":1796464800000,"pid":1,"msg":"inbound mTLS listener ready","port":15006}',
  '{"level":40,"time":1796464800001,"pid":1,"msg":"svid rotated","serial":"0a1b"}',
  '{"level":30,"time":1796464800002,"pid":1,"msg":"policy reloaded","rules":3}'
]

interface Workload { id: string, chain: string, lines: string[] }

async function writeLog (file: string, svid: SvidFiles, id: string, name: string): Promise<Workload> {
  const signer = signerFrom(svid, id)
  const log = new DecisionLog({ stdout: false, file, checkpointEvery: EVERY, signer: () => signer })
  for (let i = 0; i < N; i++) {
    const rid = `${name}-${i}`
    // Some long paths (split by the runtimes below), some non-ASCII, some denied.
    const path = i % 9 === 4 ? `/ok/café/${i}/${'x'.repeat(2500)}` : `/ok/${i}`
    const denied = i % 7 === 3
    if (!denied && i % 4 === 0) log.admit(decisionFields(rid, CALLER, id, { path, rawPath: path }))
    log.write(decisionFields(rid, CALLER, id, denied ? { decision: 'deny', reason: 'no-rule', rule: null, status: 403, path, rawPath: path } : { path, rawPath: path }))
  }
  await log.close()
  const lines = readLines(file)
  return { id, chain: parse(lines[0]!).chain as string, lines }
}


let tick = 0
/** An RFC 3339 time with nanoseconds, as the kubelet writes it. */
const nanoTime = (): string => new Date(Date.UTC(2026, 11, 5, 10) + (tick++)).toISOString().replace('Z', '456789Z')

/** kubelet CRI format: long lines cut into 2-3 P parts plus the F part, stderr lines mixed in (one between P parts). */
function criWrap (lines: readonly string[]): { out: string[], skipped: number, parts: number } {
  const out: string[] = []
  let skipped = 0
  let parts = 0
  const op = (i: number): void => { out.push(`${nanoTime()} stderr F ${OP_LINES[i % OP_LINES.length]!}`); skipped++ }
  for (const [i, line] of lines.entries()) {
    if (i % 10 === 0) op(i)
    if (i % 25 === 7) { out.push(`${nanoTime()} stdout F 10.0.0.7 - - "GET /healthz HTTP/1.1" 200`); skipped++ }
    if (line.length > 1000) {
      const cuts = i % 2 === 0 ? [700] : [500, 1333]
      let from = 0
      for (const [k, cut] of cuts.entries()) {
        out.push(`${nanoTime()} stdout P ${line.slice(from, cut)}`)
        parts++
        if (k === 0) op(i + 1)
        from = cut
      }
      out.push(`${nanoTime()} stdout F ${line.slice(from)}`)
    } else out.push(`${nanoTime()} stdout F ${line}`)
  }
  return { out, skipped, parts }
}

/** Docker json-file: one entry per line ending in \n; long lines cut into partial entries (no \n), stderr between. */
function dockerWrap (lines: readonly string[]): { out: string[], skipped: number, partials: number } {
  const out: string[] = []
  let skipped = 0
  let partials = 0
  const entry = (log: string, stream: string): string => JSON.stringify({ log, stream, time: nanoTime() })
  for (const [i, line] of lines.entries()) {
    if (i % 12 === 0) { out.push(entry(`${OP_LINES[i % OP_LINES.length]!}\n`, 'stderr')); skipped++ }
    if (line.length > 1000) {
      out.push(entry(line.slice(0, 900), 'stdout'))
      partials++
      out.push(entry(`${OP_LINES[0]!}\n`, 'stderr'))
      skipped++
      out.push(entry(`${line.slice(900)}\n`, 'stdout'))
    } else out.push(entry(`${line}\n`, 'stdout'))
  }
  return { out, skipped, partials }
}

/** A shipper's re-serialization: keys reversed, spaced, "/" escaped as "\/" (Fluent Bit does), in three record shapes. */
function reserialize (rec: Record<string, unknown>, i: number): string {
  const reversed = Object.fromEntries(Object.entries(rec).reverse())
  const spaced = JSON.stringify(reversed, null, 1).replace(/\n/g, '').replace(/\//g, '\\/')
  const k8s = { pod_name: 'payments-7d9f', namespace_name: 'shop', container_name: 'gatehouse' }
  if (i % 3 === 0) return spaced
  if (i % 3 === 1) return JSON.stringify({ kubernetes: k8s, log: reversed })
  return JSON.stringify({ kubernetes: k8s, log: spaced })
}

/** Merges logs into one stream, each keeping its own order. */
function merge (logs: ReadonlyArray<readonly string[]>, seed: number): string[] {
  const rnd = prng(seed)
  const at = logs.map(() => 0)
  const out: string[] = []
  for (;;) {
    const open = logs.flatMap((l, k) => at[k]! < l.length ? [k] : [])
    if (open.length === 0) return out
    const k = open[Math.floor(rnd() * open.length)]!
    out.push(logs[k]![at[k]!++]!)
  }
}

t.test('decision logs through CRI, Docker, Fluent Bit, gzip rotation and merging: verified; tampering on top caught', async t => {
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const specs = [['/ns/shop/sa/payments', 'payments'], ['/ns/shop/sa/orders', 'orders'], ['/ns/shop/sa/inventory', 'inventory']] as const
  const w: Workload[] = []
  for (const [path, name] of specs) w.push(await writeLog(join(dir, `${name}.log`), pki.issue(path, name), `spiffe://example.org${path}`, name))
  const [a, b, c] = w as [Workload, Workload, Workload]
  let n = 0
  const file = (lines: readonly string[], ext = 'log'): string => { const f = join(dir, `input-${++n}.${ext}`); writeLines(f, lines); return f }
  const gz = (lines: readonly string[], name: string): string => { const f = join(dir, name); writeFileSync(f, gzipSync(lines.map(l => `${l}\n`).join(''))); return f }
  const chainOf = (chains: ChainReport[], wl: Workload): ChainReport | undefined => chains.find(ch => ch.chain === wl.chain)

  t.equal(a.lines.length, new Set(a.lines.map(l => parse(l).seq)).size, 'the writer numbers every line once')
  t.ok(a.lines.filter(l => parse(l).msg === 'checkpoint').length >= N / EVERY, 'checkpoints every 20 lines')
  t.ok(a.lines.some(l => l.length > 1000) && a.lines.some(l => parse(l).msg === 'admit'), 'long lines and admit lines in the log')
  t.equal(new Set(w.map(x => x.chain)).size, 3, 'three chains')
  const plain = await verifyInProcess([join(dir, 'payments.log')], pki.bundleFile)
  t.equal(plain.status, 0, 'the file as written verifies')

  await t.test('1. CRI wrapping (P parts joined, stderr and other lines skipped)', async t => {
    const { out, skipped, parts } = criWrap(a.lines)
    t.ok(parts > 10 && skipped > 15, `${parts} P parts, ${skipped} other lines`)
    const { status, report } = await verifyInProcess([file(out)], pki.bundleFile)
    t.equal(status, 0, `exit 0 (${JSON.stringify(report.break ?? report.unverifiedTail ?? null)})`)
    t.equal(report.input.skipped, skipped, 'every operational / non-decision line counted as skipped')
    t.equal(report.input.records, a.lines.length, 'every decision-log line read back, P parts joined')
    t.equal(report.input.damaged, 0, 'no damaged line')
    t.match(report.chains, [{ chain: a.chain, verdict: 'VERIFIED', writer: a.id, genesis: true, lines: a.lines.length, verifiedThrough: a.lines.length }])
    t.equal(report.chains.length, 1, 'one chain')
  })

  await t.test('2. Docker json-file wrapping (partial entries joined)', async t => {
    const { out, skipped, partials } = dockerWrap(b.lines)
    t.ok(partials > 5, `${partials} lines split into partial entries`)
    const { status, report } = await verifyInProcess([file(out)], pki.bundleFile)
    t.equal(status, 0, `exit 0 (${JSON.stringify(report.break ?? null)})`)
    t.equal(report.input.skipped, skipped, 'stderr entries skipped')
    t.equal(report.input.records, b.lines.length, 'every line read back')
    t.match(report.chains, [{ chain: b.chain, verdict: 'VERIFIED', writer: b.id, lines: b.lines.length, verifiedThrough: b.lines.length }])
  })

  await t.test('3. Fluent Bit re-serialization (key order, spacing, escapes, {"log": {...}}); then one value edited', async t => {
    const recs = c.lines.map(parse)
    const out = recs.map(reserialize)
    t.not(out[0], c.lines[0], 'the lines are no longer as written')
    t.ok(out.some(l => l.includes('\\/')) && out.some(l => l.startsWith('{"kubernetes"')), 'escaped slashes, wrapped records')
    const { status, report } = await verifyInProcess([file(out)], pki.bundleFile)
    t.equal(status, 0, `exit 0 (${JSON.stringify(report.break ?? null)})`)
    t.match(report.chains, [{ verdict: 'VERIFIED', writer: c.id, lines: c.lines.length, verifiedThrough: c.lines.length, checkpoints: recs.filter(r => r.msg === 'checkpoint').length }])
    t.equal(report.input.skipped, 0, 'nothing skipped')

    for (const shape of [0, 1, 2]) {
      const i = recs.findIndex((r, j) => j > 40 && j % 3 === shape && r.status === 403)
      t.ok(i > 0, `a denied decision in shape ${shape}`)
      const edited = [...out]
      edited[i] = reserialize({ ...recs[i]!, status: 200 }, i)
      t.not(edited[i], out[i], 'the line changed')
      const r = await verifyInProcess([file(edited)], pki.bundleFile)
      t.equal(r.status, 1, `shape ${shape}: 403 -> 200: exit 1 (TAMPERED)`)
      t.equal(r.report.verdict, 'TAMPERED')
      t.match(r.report.break, { kind: 'edited', seq: recs[i]!.seq + 1, message: new RegExp(`seq ${recs[i]!.seq} was edited`) }, `shape ${shape}: edited, found at the next line`)
    }
  })

  await t.test('4. rotation with gzip: files in any order; head file gone', async t => {
    const [c1, c2] = [50, 120]
    const f1 = gz(a.lines.slice(0, c1), 'decisions.log.2.gz')
    const f2 = gz(a.lines.slice(c1, c2), 'decisions.log.1')
    const f3 = file(a.lines.slice(c2))
    const all = await verifyInProcess([f3, f1, f2], pki.bundleFile)
    t.equal(all.status, 0, `three files, two gzipped, shuffled: exit 0 (${JSON.stringify(all.report.break ?? null)})`)
    t.match(all.report.chains, [{ verdict: 'VERIFIED', genesis: true, verifiedFrom: 1, lines: a.lines.length, files: [f1, f2, f3] }])
    const headless = await verifyInProcess([f3, f2], pki.bundleFile)
    t.equal(headless.status, 0, `genesis file dropped: exit 0 (${JSON.stringify(headless.report.break ?? null)})`)
    t.equal(headless.report.chains[0]?.genesis, false, 'no genesis')
    t.equal(headless.report.chains[0]?.verifiedFrom, c1 + 1, `verified from seq ${c1 + 1}, the first present`)
    t.equal(headless.report.chains[0]?.writer, a.id, 'writer named by the first checkpoint')
    t.equal(headless.report.chains[0]?.lines, a.lines.length - c1)
    const strict = await verifyInProcess([f3, f2], pki.bundleFile, { requireGenesis: true })
    t.equal(strict.status, 8, '--require-genesis: exit 8 (NO GENESIS)')
    t.equal(strict.report.verdict, 'NO GENESIS')
    const middle = await verifyInProcess([f1, f3], pki.bundleFile)
    t.equal(middle.status, 4, 'the middle file missing: exit 4 (GAP)')
    t.match(middle.report.break, { kind: 'removed', seq: c2 + 1 })
  })

  await t.test('5. three sidecars interleaved in one stream; one chain damaged', async t => {
    const merged = merge([a.lines, b.lines, c.lines], 7)
    const switches = merged.filter((l, i) => i > 0 && parse(l).chain !== parse(merged[i - 1]!).chain).length
    t.ok(switches > merged.length / 3, `the chains are interleaved (${switches} switches in ${merged.length} lines)`)
    const ok = await verifyInProcess([file(merged)], pki.bundleFile)
    t.equal(ok.status, 0, `exit 0 (${JSON.stringify(ok.report.break ?? null)})`)
    t.equal(ok.report.chains.length, 3, 'three chains')
    for (const x of w) t.match(chainOf(ok.report.chains, x), { verdict: 'VERIFIED', writer: x.id, lines: x.lines.length, verifiedThrough: x.lines.length }, `${x.id}: VERIFIED`)

    const posOf = (x: Workload, seq: number): number => merged.findIndex(l => { const r = parse(l); return r.chain === x.chain && r.seq === seq })
    /** The seq of a decision line of x, at or after `from`, whose next line is a decision line too. */
    const pick = (x: Workload, from: number): number => { const recs = x.lines.map(parse); return recs.find((r, i) => r.seq >= from && r.msg === 'decision' && recs[i + 1]?.msg === 'decision')!.seq }

    const k = pick(b, 60)
    const removed = merged.filter((_, i) => i !== posOf(b, k))
    const gap = await verifyInProcess([file(removed)], pki.bundleFile)
    t.equal(gap.status, 4, 'a decision line of sidecar 2 removed: exit 4 (GAP)')
    t.match(gap.report.break, { kind: 'removed', seq: k + 1 })
    t.equal(chainOf(gap.report.chains, b)?.verdict, 'GAP', 'sidecar 2: GAP')
    t.equal(chainOf(gap.report.chains, a)?.verdict, 'VERIFIED', 'sidecar 1 still VERIFIED')
    t.equal(chainOf(gap.report.chains, c)?.verdict, 'VERIFIED', 'sidecar 3 still VERIFIED')

    const j = pick(c, 80)
    const [p, q] = [posOf(c, j), posOf(c, j + 1)]
    const swapped = [...merged]
    swapped[p] = merged[q]!
    swapped[q] = merged[p]!
    const re = await verifyInProcess([file(swapped)], pki.bundleFile)
    t.equal(re.status, 5, 'two lines of sidecar 3 swapped: exit 5 (REORDERED)')
    t.match(re.report.break, { kind: 'inserted-or-reordered', seq: j + 1 })
    t.same([a, b, c].map(x => chainOf(re.report.chains, x)?.verdict), ['VERIFIED', 'VERIFIED', 'REORDERED'], 'only sidecar 3 is REORDERED')

    const both = swapped.filter((_, i) => i !== posOf(b, k))
    const worst = await verifyInProcess([file(both)], pki.bundleFile)
    t.equal(worst.status, 5, 'both: the worse verdict (REORDERED) decides the exit')
    t.same([a, b, c].map(x => chainOf(worst.report.chains, x)?.verdict), ['VERIFIED', 'GAP', 'REORDERED'], 'each chain its own verdict')
  })

  await t.test('6. lost head + CRI + gzip: verified from the first checkpoint', async t => {
    const cut = 30
    const { out, skipped } = criWrap(b.lines.slice(cut))
    const firstCp = b.lines.slice(cut).map(parse).find(r => r.msg === 'checkpoint')!
    const f = gz(out, 'orders-0.log.gz')
    const { status, report } = await verifyInProcess([f], pki.bundleFile)
    t.equal(status, 0, `exit 0 (${JSON.stringify(report.break ?? null)})`)
    t.match(report.chains, [{ verdict: 'VERIFIED', genesis: false, firstSeq: cut + 1, verifiedFrom: cut + 1, writer: b.id, firstCheckpoint: { seq: firstCp.seq, signer: b.id }, verifiedThrough: b.lines.length }])
    t.equal(report.input.skipped, skipped, 'operational lines skipped inside the gzip')
    t.equal((await verifyInProcess([f], pki.bundleFile, { requireGenesis: true })).status, 8, '--require-genesis: exit 8')
  })

  await t.test('7. the wrong trust bundle: UNTRUSTED, never TAMPERED', async t => {
    const sameDomain = new Pki(tempDir(t))
    const otherDomain = new Pki(tempDir(t), 'other.example')
    const merged = merge([a.lines, b.lines, c.lines], 11)
    const inputs = [file(merged), file(criWrap(c.lines).out), gz(dockerWrap(a.lines).out, 'docker.gz')]
    for (const bundle of [sameDomain.bundleFile, otherDomain.bundleFile]) {
      for (const f of inputs) {
        const { status, report } = await verifyInProcess([f], bundle)
        t.equal(status, 6, `${f.split('/').at(-1)!} with ${bundle.includes('other.example') ? 'another trust domain' : 'another CA'}: exit 6`)
        t.match(report.break, { kind: 'untrusted-signer', message: /trust bundle does not vouch for/ })
        t.same(report.chains.map(ch => ch.verdict), report.chains.map(() => 'UNTRUSTED'), 'every chain UNTRUSTED, none TAMPERED')
      }
    }
  })
})
