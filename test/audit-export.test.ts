import t from 'tap'
import { join } from 'node:path'
import { readFileSync, writeFileSync } from 'node:fs'
import { Pki } from './helpers/mesh.ts'
import { tempDir } from './helpers/files.ts'
import { gatehouseAsync, readLines, writeLines, parse } from './helpers/audit-log.ts'
import { writeMeshLogs, writeCalleeLog, MESH_TRAFFIC, PAYMENTS, ORDERS, EVIL, tamperOneLine } from './helpers/decision-logs.ts'
import type { VerifyReport } from '../src/audit/verify.ts'

// `gatehouse audit query --export FILE`: the matching lines with the lines that chain each one to a
// signed checkpoint, in a file `audit verify` checks on its own. Real logs (DecisionLog, checkpoints
// signed by each sidecar's SVID from the test CA), real CLI runs; then an attacker's edits of the
// export, each caught with its own verdict.

const dir = tempDir(t, 'gh-export-')
const pki = new Pki(dir)
const logs = await writeMeshLogs(dir, pki)
const bundle = pki.bundleFile
const ordersCalls = MESH_TRAFFIC[PAYMENTS]!.filter(c => c.caller === ORDERS).reduce((n, c) => n + c.n, 0)

let n = 0
async function exportOf (args: string[], files = logs): Promise<{ file: string, status: number | null, out: string, err: string }> {
  const file = join(dir, `export-${n++}.jsonl`)
  const r = await gatehouseAsync(['audit', 'query', ...files, ...args, '--export', file, '--trust-bundle', bundle])
  return { file, status: r.status, out: r.stdout, err: r.stderr }
}
async function verify (file: string): Promise<{ status: number | null, report: VerifyReport, text: string }> {
  const json = await gatehouseAsync(['audit', 'verify', file, '--trust-bundle', bundle, '-o', 'json'])
  const text = await gatehouseAsync(['audit', 'verify', file, '--trust-bundle', bundle])
  return { status: json.status, report: JSON.parse(json.stdout) as VerifyReport, text: text.stdout }
}

t.test('an export of one caller\'s requests verifies on its own, and holds exactly the matches', async t => {
  const e = await exportOf(['--caller', ORDERS])
  t.equal(e.status, 0, `export exit 0\n${e.err}`)
  t.match(e.out, new RegExp(`^${ordersCalls} matching line\\(s\\) from 1 chain\\(s\\) written to`), 'says how many matched')
  const v = await verify(e.file)
  t.equal(v.status, 0, `verify exit 0\n${v.text}`)
  t.equal(v.report.verdict, 'VERIFIED')
  t.same(v.report.export && { matches: v.report.export.matches, proven: v.report.export.proven }, { matches: ordersCalls, proven: ordersCalls }, 'every match proven')
  t.equal(v.report.chains[0]!.writer, PAYMENTS, 'the writer is the callee whose key signed the checkpoints')
  t.match(v.text, /an export \(made .*\): \d+ of \d+ matching line\(s\) proven by a checkpoint of their writer; the header is not signed/, 'the text report says what an export proves')
  // The export is a log any tool reads: the same query over it gives the same lines as over the sources.
  const fromSources = await gatehouseAsync(['audit', 'query', ...logs, '--caller', ORDERS, '-o', 'json'])
  const fromExport = await gatehouseAsync(['audit', 'query', e.file, '--caller', ORDERS, '-o', 'json'])
  t.equal(fromExport.stdout, fromSources.stdout, 'query over the export = query over the logs')
  t.equal(fromExport.stdout.trim().split('\n').length, ordersCalls)
  // Context lines are there only as links of the chain: fewer lines than the whole log.
  const exported = readLines(e.file).length - 1
  const all = logs.reduce((s, f) => s + readLines(f).length, 0)
  t.ok(exported < all, `${exported} lines exported of ${all}`)
})

t.test('matches in several chains and segments; filters by decision and rule', async t => {
  const e = await exportOf(['--decision', 'deny'])
  t.equal(e.status, 0, e.err)
  const v = await verify(e.file)
  t.equal(v.report.verdict, 'VERIFIED', v.text)
  t.equal(v.report.chains.length, 2, 'both sidecars\' chains')
  t.ok(v.report.chains.some(c => (c.exported?.segments ?? 0) > 1), 'a chain in more than one segment')
  t.equal(v.report.export?.proven, v.report.export?.matches)
  const r = await verify((await exportOf(['--rule', 'no-admin'])).file)
  t.equal(r.report.export?.matches, MESH_TRAFFIC[PAYMENTS]!.find(c => c.caller === EVIL)!.n)
})

t.test('edits of an export are caught, each with its own verdict', async t => {
  const base = (await exportOf(['--caller', ORDERS])).file
  const lines = readLines(base)
  const variant = async (name: string, edit: (l: string[]) => string[]): Promise<{ status: number | null, report: VerifyReport, text: string }> => {
    const file = join(dir, `${name}.jsonl`)
    writeLines(file, edit([...lines]))
    return await verify(file)
  }
  const firstMatch = lines.findIndex((l, i) => i > 0 && l.includes(`"caller":"${ORDERS}"`))
  const edited = await variant('edited', l => { l[firstMatch] = l[firstMatch]!.replace('"GET"', '"DELETE"'); return l })
  t.equal(edited.report.verdict, 'TAMPERED', 'a matching line edited')
  t.equal(edited.status, 1)
  // A context line edited breaks the chain just the same.
  const ctx = lines.findIndex((l, i) => i > 0 && !l.includes(`"caller":"${ORDERS}"`) && parse(l).msg === 'decision')
  t.ok(ctx > 0, 'the export holds context lines')
  t.equal((await variant('context', l => { l[ctx] = l[ctx]!.replace(/"status":\d+/, '"status":599'); return l })).report.verdict, 'TAMPERED', 'a context line edited')
  // Removing the checkpoints strips the proof: the matches are no longer proven.
  const noCps = await variant('no-checkpoints', l => l.filter(x => !x.includes('"msg":"checkpoint"')))
  t.not(noCps.report.verdict, 'VERIFIED', `checkpoints removed: ${noCps.report.verdict}`)
  t.equal(noCps.report.chains[0]!.break?.kind ?? 'tail', noCps.report.chains[0]!.break === undefined ? 'tail' : 'unsigned', 'reported as unproven lines, not as an edit')
  const lastCp = lines.findLastIndex(x => x.includes('"msg":"checkpoint"'))
  const noLast = await variant('no-last-checkpoint', l => l.filter((_, i) => i !== lastCp))
  t.equal(noLast.report.verdict, 'UNSIGNED TAIL', 'the last checkpoint removed: the matches after the one before are an unsigned tail')
  t.equal(noLast.status, 3)
  // A line inserted from another log: it does not chain.
  const foreign = readLines(logs[1]!).find(l => parse(l).msg === 'decision')!
  const inserted = await variant('inserted', l => { l.splice(firstMatch + 1, 0, foreign); return l })
  t.not(inserted.report.verdict, 'VERIFIED', `a foreign line inserted: ${inserted.report.verdict}`)
  // Lines moved within a segment.
  const swapped = await variant('swapped', l => { const a = l[firstMatch]!; l[firstMatch] = l[firstMatch + 1]!; l[firstMatch + 1] = a; return l })
  t.equal(swapped.report.verdict, 'REORDERED')
  // The header is not evidence: editing its query changes which lines count as matches, never whether they are proven.
  const header = await variant('header', l => { l[0] = l[0]!.replace(`"caller":"${ORDERS}"`, '"caller":"spiffe://example.org/**"'); return l })
  t.equal(header.report.verdict, 'VERIFIED', 'a widened query in the header: still only what the lines prove')
})

t.test('a log the export cannot prove: wrong bundle, tampered source, unsigned tail, existing file', async t => {
  const e = await exportOf(['--caller', ORDERS])
  const other = new Pki(join(dir, 'other'))
  const wrong = await gatehouseAsync(['audit', 'verify', e.file, '--trust-bundle', other.bundleFile, '-o', 'json'])
  t.equal((JSON.parse(wrong.stdout) as VerifyReport).verdict, 'UNTRUSTED', 'a wrong trust bundle is UNTRUSTED, not tampering')

  const tampered = join(dir, 'tampered.log')
  writeFileSync(tampered, readFileSync(logs[0]!))
  tamperOneLine(tampered)
  const refused = await exportOf(['--caller', ORDERS], [tampered])
  t.equal(refused.status, 1, 'a source log that does not verify is refused')
  t.match(refused.err, /refused: the logs do not verify \(TAMPERED/)
  const anyway = await gatehouseAsync(['audit', 'query', tampered, '--decision', 'deny', '--export', join(dir, 'anyway.jsonl'), '--unverified'])
  t.equal(anyway.status, 0, '--unverified exports anyway')
  t.equal((await verify(join(dir, 'anyway.jsonl'))).report.verdict, 'TAMPERED', 'and the export says what it is')

  // A log whose last lines have no checkpoint yet (a sidecar killed before it signed them).
  const cut = join(dir, 'cut.log')
  await writeCalleeLog(cut, pki, PAYMENTS, MESH_TRAFFIC[PAYMENTS]!, 1000)
  writeLines(cut, readLines(cut).slice(0, -1))
  const tail = await gatehouseAsync(['audit', 'query', cut, '--caller', ORDERS, '--export', join(dir, 'tail.jsonl'), '--unverified'])
  t.match(tail.stdout, new RegExp(`${ordersCalls} of them have no checkpoint yet`), 'the export says the matches are unproven')
  const v = await verify(join(dir, 'tail.jsonl'))
  // No checkpoint at all in it: nothing ties the lines to a workload (not merely a tail).
  t.equal(v.report.verdict, 'NOT VERIFIED')
  t.equal(v.status, 7)
  t.equal(v.report.export?.proven, 0)

  const again = await gatehouseAsync(['audit', 'query', ...logs, '--export', e.file, '--trust-bundle', bundle])
  t.equal(again.status, 2, 'an existing export is never overwritten')
  t.match(again.stderr, /exists; an export is evidence and is never overwritten/)
  const noBundle = await gatehouseAsync(['audit', 'query', ...logs, '--export', join(dir, 'nb.jsonl')])
  t.equal(noBundle.status, 2)
  t.match(noBundle.stderr, /--trust-bundle is required to verify the logs first/)
})

t.test('from logs as a cluster delivers them (CRI-wrapped), the export holds the lines as the sidecar wrote them', async t => {
  const cri = join(dir, 'cri.log')
  writeFileSync(cri, readLines(logs[0]!).map((l, i) => `2026-12-06T00:00:${String(i % 60).padStart(2, '0')}.000000000Z stdout F ${l}`).join('\n') + '\n')
  const e = await exportOf(['--caller', ORDERS], [cri])
  t.equal(e.status, 0, e.err)
  const v = await verify(e.file)
  t.equal(v.report.verdict, 'VERIFIED', v.text)
  t.notOk(readFileSync(e.file, 'utf8').includes('stdout F'), 'unwrapped')
})
