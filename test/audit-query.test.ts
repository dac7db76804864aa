import t from 'tap'
import { join } from 'node:path'
import { readdirSync, writeFileSync, openSync, writeSync, closeSync, statSync } from 'node:fs'
import { createHash, createPrivateKey } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { Pki } from './helpers/mesh.ts'
import { cliPath, type CliResult } from './helpers/run-cli.ts'
import { GENESIS_PREV, verifyInProcess, gatehouseAsync } from './helpers/audit-log.ts'
import { DecisionLog, type DecisionFields } from '../src/audit/record.ts'
import { auditQuery } from '../src/cli/audit.ts'
import { ConfigInvalidError } from '../src/errors.ts'
import { pemToDers } from '../src/x509/certificate.ts'
import { tempDir } from './helpers/files.ts'

// `gatehouse audit query`: filters (caller glob, decision, path glob, since/until) over a log that
// spans several rotated files, the summaries (who calls whom, denials by caller and path) and, with
// the policy, rules never matched and allowed callers never seen. Then a million-line log, streamed.

const TD = 'spiffe://example.org'
const ORDERS = `${TD}/ns/orders/sa/api`
const BILLING = `${TD}/ns/billing/sa/worker`
const CRON = `${TD}/ns/billing/sa/cron`
const NEVER = `${TD}/ns/billing/sa/never`
const PAYMENTS = `${TD}/ns/payments/sa/payments`

const POLICY = `version: 1
rules:
  - name: orders-charges
    from: ["${ORDERS}"]
    methods: [GET]
    paths: ["/v1/charges", "/v1/charges/**"]
  - name: billing-reads
    from: ["${BILLING}", "${NEVER}", "${TD}/ns/billing/*/*"]
    methods: [GET]
  - name: legacy-unused
    from: ["${TD}/ns/legacy/sa/old"]
deny:
  - name: no-admin
    from: ["${TD}/**"]
    paths: ["/admin/**"]
  - name: deny-unused
    from: ["${TD}/ns/evil/sa/x"]
`

interface Req { caller: string, method: string, path: string, decision: 'allow' | 'deny', rule: string | null, n: number }

// Before the time mark, then after it. Counts per kind are distinct, so every filter has one right answer.
const EARLY: Req[] = [
  { caller: ORDERS, method: 'GET', path: '/v1/charges', decision: 'allow', rule: 'orders-charges', n: 3 },
  { caller: BILLING, method: 'POST', path: '/v1/charges/1', decision: 'deny', rule: null, n: 2 },
  { caller: CRON, method: 'GET', path: '/admin', decision: 'deny', rule: 'no-admin', n: 1 }
]
const LATE: Req[] = [
  { caller: ORDERS, method: 'GET', path: '/v1/charges/9/refunds', decision: 'allow', rule: 'orders-charges', n: 4 },
  { caller: BILLING, method: 'GET', path: '/v1/invoices', decision: 'allow', rule: 'billing-reads', n: 5 },
  { caller: CRON, method: 'GET', path: '/admin/users', decision: 'deny', rule: 'no-admin', n: 6 },
  { caller: BILLING, method: 'POST', path: '/v1/charges/1', decision: 'deny', rule: null, n: 7 }
]
const count = (reqs: Req[], pred: (r: Req) => boolean = () => true): number => reqs.filter(pred).reduce((s, r) => s + r.n, 0)

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

function fields (r: Req, i: number): DecisionFields {
  return {
    requestId: `${r.caller.split('/').pop()!}-${i}`,
    decision: r.decision,
    mode: 'enforce',
    enforced: true,
    rule: r.rule,
    reason: r.decision === 'allow' ? 'allow-rule' : r.rule === null ? 'no-matching-rule' : 'deny-rule',
    caller: r.caller,
    callee: PAYMENTS,
    method: r.method,
    path: r.path,
    rawPath: r.path,
    status: r.decision === 'allow' ? 200 : 403,
    durationMs: 1.5,
    policyRevision: 'sha256:0123456789abcdef',
    peerCertSerial: '01'
  }
}

t.test('audit query: filters, summaries and policy findings on a signed, rotated log', async t => {
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const svid = pki.issue('/ns/payments/sa/payments', 'payments')
  const logFile = join(dir, 'decisions.log')
  const log = new DecisionLog({
    stdout: false,
    file: logFile,
    maxFileBytes: 4096,
    checkpointEvery: 8,
    signer: () => ({ spiffeId: PAYMENTS, chainDers: pemToDers(svid.chainPem), privateKey: createPrivateKey(svid.keyPem) })
  })
  let i = 0
  for (const r of EARLY) for (let k = 0; k < r.n; k++) log.write(fields(r, i++))
  await sleep(30) // sets the early lines' timestamps apart from the mark
  const mark = new Date().toISOString()
  await sleep(30) // and the mark apart from the late lines' timestamps
  for (const r of LATE) for (let k = 0; k < r.n; k++) log.write(fields(r, i++))
  await log.close()

  const files = readdirSync(dir).filter(f => f.startsWith('decisions.log')).map(f => join(dir, f))
  t.ok(files.length >= 3, `the log spans ${files.length} files`)
  t.equal((await verifyInProcess(files, pki.bundleFile)).status, 0, 'and is a valid, signed log')
  const all = [...EARLY, ...LATE]
  const total = count(all)

  // The `audit query` runner in-process (exactly what src/cli.ts dispatches to, flags and output
  // included) for the many cases; the real executable (a node process each) for a few.
  const run = async (args: string[]): Promise<CliResult> => {
    let stdout = ''
    try {
      const status = await auditQuery([...files, ...args], { out: (text) => { stdout += text }, onShutdown: () => {} })
      return { status: status ?? null, stdout, stderr: '' }
    } catch (err) {
      return { status: err instanceof ConfigInvalidError ? 2 : 1, stdout, stderr: (err as Error).message }
    }
  }
  const spawned = (args: string[]): Promise<CliResult> => gatehouseAsync(['audit', 'query', ...files, ...args])
  const jsonRows = async (p: Promise<CliResult>): Promise<{ status: number | null, rows: Array<Record<string, any>>, stderr: string }> => {
    const r = await p
    return { status: r.status, rows: r.stdout.split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Record<string, any>), stderr: r.stderr }
  }
  const policyFile = join(dir, 'policy.yaml')
  writeFileSync(policyFile, POLICY)
  const cases: Array<{ args: string[], expected: number, pred: (d: Record<string, any>) => boolean, what: string }> = [
    { args: [], expected: total, pred: d => d.msg === 'decision', what: 'no filter: every decision line, no genesis or checkpoint' },
    { args: ['--caller', ORDERS], expected: count(all, r => r.caller === ORDERS), pred: d => d.caller === ORDERS, what: '--caller exact' },
    { args: ['--caller', `${TD}/ns/billing/**`], expected: count(all, r => r.caller !== ORDERS), pred: d => d.caller === BILLING || d.caller === CRON, what: '--caller glob **' },
    { args: ['--caller', `${TD}/ns/*/sa/cron`], expected: count(all, r => r.caller === CRON), pred: d => d.caller === CRON, what: '--caller glob * within a segment' },
    { args: ['--caller', `${TD}/ns/*`], expected: 0, pred: () => true, what: '--caller * does not cross "/"' },
    { args: ['--decision', 'deny'], expected: count(all, r => r.decision === 'deny'), pred: d => d.decision === 'deny' && d.status === 403, what: '--decision deny' },
    { args: ['--decision', 'allow'], expected: count(all, r => r.decision === 'allow'), pred: d => d.decision === 'allow', what: '--decision allow' },
    { args: ['--path', '/v1/*'], expected: count(all, r => r.path === '/v1/charges' || r.path === '/v1/invoices'), pred: d => /^\/v1\/[^/]+$/.test(d.path as string), what: '--path /v1/* (one segment)' },
    { args: ['--path', '/v1/charges/**'], expected: count(all, r => r.path === '/v1/charges' || r.path.startsWith('/v1/charges/')), pred: d => d.path === '/v1/charges' || (d.path as string).startsWith('/v1/charges/'), what: '--path /v1/charges/** (the path itself and any depth below, as in policies)' },
    { args: ['--path', '/admin**'], expected: count(all, r => r.path.startsWith('/admin')), pred: d => (d.path as string).startsWith('/admin'), what: '--path /admin**' },
    { args: ['--since', mark], expected: count(LATE), pred: d => (d.time as string) > mark, what: '--since the mark' },
    { args: ['--until', mark], expected: count(EARLY), pred: d => (d.time as string) < mark, what: '--until the mark' },
    { args: ['--since', '1h'], expected: total, pred: () => true, what: '--since 1h (a duration ago)' },
    { args: ['--until', '1h'], expected: 0, pred: () => true, what: '--until 1h ago: nothing yet' },
    { args: ['--caller', BILLING, '--decision', 'deny', '--since', mark, '--path', '/v1/charges/*'], expected: 7, pred: d => d.caller === BILLING && d.decision === 'deny' && (d.time as string) > mark, what: 'filters combined' }
  ]
  // Started up front, in parallel: node start-up dominates a run of the real executable.
  const viaCli = new Set(['--caller glob **', 'filters combined'])
  const started = cases.map(c => jsonRows((viaCli.has(c.what) ? spawned : run)(['--format', 'json', ...c.args])))
  const badRun = jsonRows(spawned(['--format', 'json', '--since', 'yesterday-ish']))
  const tableRun = run(['--decision', 'deny'])
  const summaryRun = spawned(['--summary', '--format', 'json'])
  const filteredRun = run(['--summary', '--format', 'json', '--since', mark, '--caller', `${TD}/ns/billing/**`])
  const policyRun = spawned(['--summary', '--format', 'json', '--policy', policyFile])
  const textRun = run(['--summary', '--policy', policyFile])

  for (const [k, c] of cases.entries()) {
    const r = await started[k]!
    t.equal(r.status, 0, `${c.what}: exit 0 (${viaCli.has(c.what) ? 'gatehouse process' : 'in-process runner'})`)
    t.equal(r.rows.length, c.expected, `${c.what}: ${c.expected} lines`)
    t.ok(r.rows.every(c.pred), `${c.what}: every line matches`)
  }

  const bad = await badRun
  t.equal(bad.status, 2, 'an unreadable --since is a configuration error (exit 2)')
  t.match(bad.stderr, /--since: expected an ISO time or a duration ago/)

  const table = await tableRun
  t.equal(table.status, 0)
  t.match(table.stdout, /^TIME\s+DECISION\s+STATUS\s+CALLER\s+METHOD\s+PATH\s+RULE\n/, 'table format: a header row')
  t.match(table.stdout, new RegExp(`\\n${count(all, r => r.decision === 'deny')} of ${total} decisions\\n$`), 'table format: matched of scanned')

  // --summary: who calls whom and denials by caller and path.
  const summaryOut = await summaryRun
  t.equal(summaryOut.status, 0)
  const summary = JSON.parse(summaryOut.stdout) as { scanned: number, matched: number, calls: Array<{ caller: string, callee: string, count: number }>, denials: Array<{ caller: string, path: string, count: number }> }
  t.equal(summary.scanned, total)
  t.equal(summary.matched, total)
  t.same([...summary.calls].sort((a, b) => a.caller.localeCompare(b.caller)), [
    { caller: CRON, callee: PAYMENTS, count: 7 },
    { caller: BILLING, callee: PAYMENTS, count: 14 },
    { caller: ORDERS, callee: PAYMENTS, count: 7 }
  ], 'who calls whom: caller, callee, count')
  t.same(summary.calls.map(c => c.count), [14, 7, 7], 'most calls first')
  t.same(summary.denials, [
    { caller: BILLING, path: '/v1/charges/1', count: 9 },
    { caller: CRON, path: '/admin/users', count: 6 },
    { caller: CRON, path: '/admin', count: 1 }
  ], 'denials by caller and path, most first')
  t.notOk('unusedRules' in summary, 'no policy findings without --policy')

  const filteredSummary = JSON.parse((await filteredRun).stdout) as typeof summary
  t.match(filteredSummary, { scanned: total, matched: count(LATE, r => r.caller !== ORDERS) }, 'filters apply to the summary')
  t.same(filteredSummary.calls.map(c => [c.caller, c.count]), [[BILLING, 12], [CRON, 6]])

  // --summary --policy: rules that never matched, exact callers an allow rule names but never seen.
  const withPolicy = JSON.parse((await policyRun).stdout) as { unusedRules: string[], unseenCallers: Array<{ rule: string, caller: string }> }
  t.same([...withPolicy.unusedRules].sort(), ['deny-unused', 'legacy-unused'], 'rules that never matched (deny and allow)')
  t.same(withPolicy.unseenCallers, [
    { rule: 'billing-reads', caller: NEVER },
    { rule: 'legacy-unused', caller: `${TD}/ns/legacy/sa/old` }
  ], 'allowed callers never seen (exact IDs only, not patterns)')

  const text = await textRun
  t.equal(text.status, 0)
  t.match(text.stdout, /who calls whom\nCALLER\s+CALLEE\s+COUNT\n/, 'text summary: who calls whom')
  t.match(text.stdout, /denials by caller and path\nCALLER\s+PATH\s+COUNT\n/, 'text summary: denials')
  t.match(text.stdout, /rules that never matched: (deny-unused, legacy-unused|legacy-unused, deny-unused)\n/, 'text summary: unused rules')
  t.match(text.stdout, `  ${NEVER} (rule billing-reads)`, 'text summary: unseen callers')
})

t.test('audit query --summary streams a 1,000,000-line log', async t => {
  const N = 1_000_000
  const dir = tempDir(t)
  const file = join(dir, 'big.log')
  const callers = Array.from({ length: 40 }, (_, i) => `${TD}/ns/team${i % 8}/sa/svc${i}`)
  const base = Date.parse('2026-01-01T00:00:00Z')
  const started = performance.now()
  // Written directly (a correct chain, unsigned: query does not verify), in 4 MiB chunks.
  const fd = openSync(file, 'w')
  let prev = GENESIS_PREV
  let chunk: string[] = []
  let chunkBytes = 0
  const emit = (line: string): void => {
    prev = createHash('sha256').update(line).digest('hex')
    chunk.push(line)
    chunkBytes += line.length + 1
    if (chunkBytes > 4 << 20) { writeSync(fd, `${chunk.join('\n')}\n`); chunk = []; chunkBytes = 0 }
  }
  emit(`{"level":30,"time":"${new Date(base).toISOString()}","seq":1,"prev":"${prev}","spiffeId":"${PAYMENTS}","x5c":[],"checkpointEvery":1000,"checkpointIntervalMs":5000,"pid":1,"msg":"genesis"}`)
  for (let i = 0; i < N; i++) {
    const deny = i % 7 === 0
    emit(`{"level":30,"time":"${new Date(base + i * 10).toISOString()}","seq":${i + 2},"prev":"${prev}","requestId":"req-${i}","decision":"${deny ? 'deny' : 'allow'}","mode":"enforce","enforced":true,"rule":${deny ? 'null' : '"reads"'},"reason":"${deny ? 'no-matching-rule' : 'allow-rule'}","caller":"${callers[i % callers.length]!}","callee":"${PAYMENTS}","method":"GET","path":"/v1/items/${i % 100}","rawPath":"/v1/items/${i % 100}","status":${deny ? 403 : 200},"durationMs":0.42,"policyRevision":"sha256:0123456789abcdef","peerCertSerial":"68742eef267d7d1e6926a2ddd6a586fe","msg":"decision"}`)
  }
  writeSync(fd, `${chunk.join('\n')}\n`)
  closeSync(fd)
  const generated = performance.now()
  t.comment(`generated ${N} decision lines (${(statSync(file).size / 1e6).toFixed(0)} MB) in ${((generated - started) / 1000).toFixed(1)} s`)

  const r = spawnSync(process.execPath, [cliPath, 'audit', 'query', file, '--summary', '--format', 'json'], { encoding: 'utf8', timeout: 300_000, maxBuffer: 16 << 20 })
  const seconds = (performance.now() - generated) / 1000
  t.comment(`audit query --summary over ${N} lines: ${seconds.toFixed(1)} s (CLI start included)`)
  t.equal(r.status, 0, `completes with exit 0${r.status === 0 ? '' : `: ${r.stderr}`}`)
  const summary = JSON.parse(r.stdout) as { scanned: number, matched: number, calls: Array<{ count: number }>, denials: Array<{ count: number }> }
  t.equal(summary.scanned, N, 'every decision line scanned')
  t.equal(summary.matched, N)
  t.equal(summary.calls.length, callers.length, 'one who-calls-whom row per caller')
  t.equal(summary.calls.reduce((s, c) => s + c.count, 0), N, 'calls add up to every line')
  t.equal(summary.denials.reduce((s, c) => s + c.count, 0), Math.ceil(N / 7), 'denials add up')
})
