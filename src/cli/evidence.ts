import { loadConfig, type Schema } from '../config.ts'
import { ConfigInvalidError } from '../errors.ts'
import { checkReadable, parseWhen, readArg, readBundleArg } from './check.ts'
import { verifyLog } from '../audit/verify.ts'
import { readLogRecordBatches, type InputStats } from '../audit/log-input.ts'
import { CallGraph, toDot, toHtml, toMermaid } from '../audit/graph.ts'
import { parsePolicy, type LoadedPolicy } from '../policy/load.ts'
import { compilePolicy } from '../policy/compile.ts'
import { decide } from '../policy/decide.ts'
import { PolicySuggester } from '../policy/suggest.ts'
import { Replayer, replayText } from '../policy/replay.ts'
import { diffPolicies, diffText, changesBehind } from '../policy/diff.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { OUTPUT, formatData, type Runner } from './runner.ts'

// Least privilege from evidence: `policy suggest`, `policy replay`, `policy diff --replay` and
// `audit graph` read decision logs (verified first, as `audit verify` does: a log that does not
// verify is refused unless --unverified) and stream them, one record at a time.

export const TRUST = {
  'trust-bundle': { kind: 'string', help: 'PEM trust bundle the writers\' SVIDs chain to: the logs are verified first' },
  unverified: { kind: 'bool', default: false, help: 'read logs that do not verify (or without --trust-bundle): the answer is only as good as the log' }
} as const satisfies Schema

const CALLEE = { callee: { kind: 'string', help: 'only the traffic to this service (SPIFFE ID): a policy is one service\'s, and logs may hold many' } } as const satisfies Schema

/** The records of the callee named by --callee (all without it). */
const toCallee = (callee: string | undefined, each: (rec: Record<string, unknown>) => void) => (rec: Record<string, unknown>): void => { if (callee === undefined || rec.callee === callee) each(rec) }

export const evidenceSchemas = {
  'policy suggest': {
    callee: { kind: 'string', required: true, help: 'SPIFFE ID of the service the policy is for (the sidecar that wrote the log)' },
    since: { kind: 'string', help: 'only traffic since this ISO time, or a duration ago (e.g. 7d)' },
    'min-calls': { kind: 'int', min: 1, default: 1, help: 'leave out routes seen fewer times than this (they would be denied)' },
    widen: { kind: 'bool', default: false, help: 'also collapse paths under the same two leading segments into /a/b/** (default: never wider than one segment)' },
    ...TRUST
  },
  'policy replay': { ...CALLEE, ...TRUST, ...OUTPUT },
  'policy diff': {
    replay: { kind: 'list', help: 'decision-log files to replay against both policies (repeat, or list after it): the traffic each change affects' },
    ...CALLEE,
    ...TRUST,
    ...OUTPUT
  },
  'audit graph': {
    output: { kind: 'enum', values: ['dot', 'mermaid', 'json', 'html'], default: 'dot', aliases: ['o', 'format'], help: 'dot (Graphviz), mermaid (Markdown), json, or html: one self-contained page to open in a browser (the graph laid out by cytoscape, inlined; no network access)' },
    ...TRUST
  }
} as const satisfies Record<string, Schema>

/** The logs, checked readable and (unless --unverified) verified: undefined when they are refused (the verdict is printed on stderr). */
export async function verifiedLogs (files: string[], command: string, c: { trustBundle?: string | undefined, unverified: boolean }): Promise<string[] | undefined> {
  if (files.length === 0) throw new ConfigInvalidError([`gatehouse ${command} needs at least one decision-log FILE, e.g. 'gatehouse ${command} decisions.log'`])
  for (const file of files) checkReadable('decision-log file', file)
  if (c.unverified) return files
  if (c.trustBundle === undefined) throw new ConfigInvalidError(['--trust-bundle is required to verify the logs first (or --unverified to read logs that are not verified)'])
  const r = await verifyLog(files, readBundleArg('--trust-bundle', c.trustBundle))
  if (r.verdict === 'VERIFIED' || c.unverified) return files
  const where = r.break === undefined ? '' : ` at ${r.break.file}:${r.break.line}: ${r.break.message}`
  process.stderr.write(`gatehouse ${command}: refused: the logs do not verify (${r.verdict}${where}); see 'gatehouse audit verify', or pass --unverified to read them anyway\n`)
  return undefined
}

/** Every decision-log record of the files, to `each`, batch by batch (never the whole log in memory). */
export async function stream (files: string[], each: (rec: Record<string, unknown>) => void): Promise<void> {
  const stats: InputStats = { skipped: 0, damaged: [] }
  for await (const batch of readLogRecordBatches(files, stats)) for (const r of batch) each(r.rec)
}

function loadPolicy (label: string, file: string | undefined, usage: string): LoadedPolicy {
  if (file === undefined) throw new ConfigInvalidError([`gatehouse ${usage}`])
  return parsePolicy(readArg(label, file), file)
}

export const policySuggest: Runner = async (argv, io) => {
  const c = loadConfig('policy suggest', evidenceSchemas['policy suggest'], { argv })
  if (SpiffeId.tryParse(c.callee) === undefined) throw new ConfigInvalidError([`--callee: expected the SPIFFE ID of the service, e.g. spiffe://example.org/ns/payments/sa/payments, got ${JSON.stringify(c.callee)}`])
  const since = parseWhen(c.since, 'since')
  const files = await verifiedLogs(c.positionals, 'policy suggest', c)
  if (files === undefined) return 1
  const s = new PolicySuggester({ callee: c.callee, minCalls: c.minCalls, widen: c.widen, ...(since === undefined ? {} : { since }) })
  await stream(files, rec => { s.add(rec) })
  if (s.scanned === 0) process.stderr.write(`gatehouse policy suggest: no decision of ${c.callee} in the logs (is --callee the sidecar that wrote them?)\n`)
  io.out(s.yaml())
  return 0
}

/** Exit codes: 0 nothing served would be denied, 3 something flips allow→deny. */
export const policyReplay: Runner = async (argv, io) => {
  const c = loadConfig('policy replay', evidenceSchemas['policy replay'], { argv })
  const [policyFile, ...logs] = c.positionals
  const { policy, revision } = loadPolicy('policy file', policyFile, 'policy replay needs the policy FILE and decision-log files, e.g. \'gatehouse policy replay policy.yaml decisions.log --trust-bundle bundle.pem\'')
  const files = await verifiedLogs(logs, 'policy replay', c)
  if (files === undefined) return 1
  const replayer = new Replayer(compilePolicy(policy))
  await stream(files, toCallee(c.callee, rec => { replayer.add(rec) }))
  const r = replayer.report()
  io.out(c.output === 'table' ? replayText(r, `policy ${revision}`) : formatData(c.output, { policy: { file: policyFile, revision, mode: policy.mode }, ...r }))
  return r.allowToDeny > 0 ? 3 : 0
}

export const policyDiff: Runner = async (argv, io) => {
  const c = loadConfig('policy diff', evidenceSchemas['policy diff'], { argv })
  const [oldFile, newFile, ...rest] = c.positionals
  const usage = 'policy diff needs the OLD and NEW policy files, e.g. \'gatehouse policy diff old.yaml new.yaml\''
  const a = loadPolicy('OLD policy file', oldFile, usage)
  const b = loadPolicy('NEW policy file', newFile, usage)
  if (rest.length > 0 && c.replay === undefined) throw new ConfigInvalidError([`unexpected argument(s) ${rest.map(x => JSON.stringify(x)).join(' ')}: 'gatehouse policy diff' takes OLD and NEW (decision logs go after --replay)`])
  const d = diffPolicies(a.policy, b.policy)
  if (c.replay === undefined) { io.out(c.output === 'table' ? diffText(d) : formatData(c.output, d)); return 0 }
  const files = await verifiedLogs([...c.replay, ...rest], 'policy diff', c)
  if (files === undefined) return 1
  const old = compilePolicy(a.policy)
  const replayer = new Replayer(compilePolicy(b.policy), (_d, facts) => { const o = decide(old, facts); return { decision: o.decision, rule: o.rule } })
  await stream(files, toCallee(c.callee, rec => { replayer.add(rec) }))
  const r = replayer.report()
  const flips = r.flips.map(g => ({ ...g, changes: changesBehind(d, g) }))
  if (c.output !== 'table') { io.out(formatData(c.output, { ...d, replay: { ...r, flips } })); return 0 }
  const text = replayText(r, `${oldFile} → ${newFile}`).split('\n')
  // Each flip group's line, followed by the changes behind it.
  let k = 0
  const annotated = text.map(line => /^ {2}(allow→deny|deny→allow) /.test(line) ? `${line}\n      because of: ${flips[k++]!.changes.join(', ')}` : line)
  io.out(`${diffText(d)}\n${annotated.join('\n')}`)
  return 0
}

export const auditGraph: Runner = async (argv, io) => {
  const c = loadConfig('audit graph', evidenceSchemas['audit graph'], { argv })
  // Without --trust-bundle the graph is drawn from the logs as they are (it decides nothing).
  const files = await verifiedLogs(c.positionals, 'audit graph', { ...c, unverified: c.unverified || c.trustBundle === undefined })
  if (files === undefined) return 1
  const g = new CallGraph()
  await stream(files, rec => { g.add(rec) })
  const result = g.result()
  io.out(c.output === 'dot' ? toDot(result) : c.output === 'mermaid' ? toMermaid(result) : c.output === 'html' ? toHtml(result, g.decisions) : formatData('json', { decisions: g.decisions, ...result }))
  return 0
}
