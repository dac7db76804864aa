import { isMap, isSeq, isScalar } from 'yaml'
import { loadConfig, type Schema } from '../config.ts'
import { ConfigInvalidError, PolicyInvalidError } from '../errors.ts'
import { parsePolicy } from '../policy/load.ts'
import { compilePolicy } from '../policy/compile.ts'
import { decide, ruleMatches, callerOf, type RequestFacts } from '../policy/decide.ts'
import { normalizeTarget } from '../policy/normalize.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { readYamlSource, mapGet } from '../yaml-source.ts'
import { readArg } from './check.ts'
import { OUTPUT, formatData, type Runner } from './runner.ts'

export const policySchemas = {
  'policy check': { ...OUTPUT },
  'policy explain': {
    caller: { kind: 'string', required: true, help: 'caller SPIFFE ID' },
    method: { kind: 'string', default: 'GET', help: 'HTTP method' },
    path: { kind: 'string', help: 'request target, e.g. /v1/charges?x=1 (an HTTP request)' },
    port: { kind: 'int', min: 1, help: 'app port of an opaque TCP connection, instead of --method/--path (rules with ports)' },
    ...OUTPUT
  },
  'policy test': {
    cases: { kind: 'string', required: true, help: 'YAML list of {caller, method, path, expect: allow|deny|400}, or {caller, port, expect} for a TCP connection' },
    ...OUTPUT
  }
} as const satisfies Record<string, Schema>

/** `policy explain`'s exit status is the answer, so a script can test it: 0 allow, 3 deny or refused (400); 1 and 2 stay errors. */
export const EXPLAIN_EXIT = { allow: 0, deny: 3, 400: 3 } as const

function loadPolicyArg (positionals: string[], command: string): ReturnType<typeof parsePolicy> {
  const file = positionals[0]
  if (file === undefined) throw new ConfigInvalidError([`gatehouse ${command} needs the policy FILE, e.g. 'gatehouse ${command} policy.yaml'`])
  if (positionals.length > 1) throw new ConfigInvalidError([`gatehouse ${command} takes one policy FILE, got ${positionals.map(p => JSON.stringify(p)).join(' ')} (values are given as --flag VALUE)`])
  return parsePolicy(readArg('policy file', file), file)
}

export const policyCheck: Runner = async (argv, io) => {
  const c = loadConfig('policy check', policySchemas['policy check'], { argv })
  try {
    const { policy, revision } = loadPolicyArg(c.positionals, 'policy check')
    const data = { valid: true, revision, mode: policy.mode, allowRules: policy.rules.length, denyRules: policy.deny.length }
    io.out(c.output === 'table' ? `OK ${revision}: ${data.allowRules} allow rule(s), ${data.denyRules} deny rule(s), mode ${policy.mode}\n` : formatData(c.output, data))
    return 0
  } catch (err) {
    if (!(err instanceof PolicyInvalidError)) throw err
    io.out(c.output === 'table' ? `${err.problems.join('\n')}\n${err.problems.length} problem(s)\n` : formatData(c.output, { valid: false, problems: err.problems }))
    return 1
  }
}

interface Outcome { outcome: 'allow' | 'deny' | '400', rule: string | null, why: string, facts?: RequestFacts }

/** An HTTP request (method, path) or an opaque TCP connection (port). */
type Target = { method: string, path: string } | { port: number }

function evaluate (compiled: ReturnType<typeof compilePolicy>, caller: string, target: Target): Outcome {
  const id = SpiffeId.parse(caller)
  if ('port' in target) {
    const facts: RequestFacts = { caller: callerOf(id), method: 'TCP', path: '', segments: [], port: target.port }
    const d = decide(compiled, facts)
    return { outcome: d.decision, rule: d.rule, why: d.reason, facts }
  }
  const { method } = target
  const n = normalizeTarget(target.path)
  if (!n.ok) return { outcome: '400', rule: null, why: `refused before the policy: ${n.reason}` }
  const facts: RequestFacts = { caller: callerOf(id), method, path: n.path, segments: n.segments }
  const d = decide(compiled, facts)
  return { outcome: d.decision, rule: d.rule, why: d.reason, facts }
}

interface RuleCheck { kind: 'deny' | 'allow', name: string, shadow: boolean, matches: boolean, wrong: string[] }

/** Why each rule did or did not match (shadow rules included, marked): what explain prints after the decision. */
function ruleChecks (compiled: ReturnType<typeof compilePolicy>, facts: RequestFacts): RuleCheck[] {
  const shadow = compiled.shadow
  return ([['deny', shadow?.deny ?? compiled.deny], ['allow', shadow?.allow ?? compiled.allow]] as const).flatMap(([kind, rules]) => rules.map(rule => {
    const m = ruleMatches(rule, facts)
    const wrong = [m.caller ? '' : 'caller', m.method ? '' : 'method', m.path ? '' : 'path', m.port ? '' : (rule.ports === undefined ? 'protocol (an HTTP rule)' : facts.port === undefined ? 'protocol (a TCP rule)' : 'port')].filter(x => x !== '')
    return { kind, name: rule.name, shadow: rule.shadow, matches: wrong.length === 0, wrong }
  }))
}

export const policyExplain: Runner = async (argv, io) => {
  const c = loadConfig('policy explain', policySchemas['policy explain'], { argv })
  const { policy, revision } = loadPolicyArg(c.positionals, 'policy explain')
  const compiled = compilePolicy(policy)
  if ((c.path === undefined) === (c.port === undefined)) throw new ConfigInvalidError(['give --path (an HTTP request) or --port (an opaque TCP connection), not both or neither'])
  const o = evaluate(compiled, c.caller, c.port !== undefined ? { port: c.port } : { method: c.method, path: c.path! })
  const rules = o.facts === undefined ? [] : ruleChecks(compiled, o.facts)
  if (c.output !== 'table') {
    io.out(formatData(c.output, { decision: o.outcome, rule: o.rule, reason: o.why, policy: { revision, mode: policy.mode }, normalizedPath: o.facts?.port === undefined ? o.facts?.path ?? null : null, ...(o.facts?.port === undefined ? {} : { port: o.facts.port }), rules }))
    return EXPLAIN_EXIT[o.outcome]
  }
  io.out(`${o.outcome.toUpperCase()}${o.rule === null ? '' : ` by rule "${o.rule}"`} (${o.why}), policy ${revision}, mode ${policy.mode}\n`)
  if (o.facts?.port !== undefined) io.out(`TCP connection to app port ${o.facts.port}\n`)
  else if (o.facts !== undefined) io.out(`normalized path: ${o.facts.path}\n`)
  for (const r of rules) io.out(`  ${r.kind} ${r.name}${r.shadow ? ' (shadow)' : ''}: ${r.matches ? 'matches' : `no match: wrong ${r.wrong.join(', ')}`}\n`)
  return EXPLAIN_EXIT[o.outcome]
}

export const policyTest: Runner = async (argv, io) => {
  const c = loadConfig('policy test', policySchemas['policy test'], { argv })
  const { policy } = loadPolicyArg(c.positionals, 'policy test')
  const compiled = compilePolicy(policy)
  const { root, at, problems } = readYamlSource(readArg('--cases', c.cases), c.cases)
  if (problems.length > 0) throw new ConfigInvalidError(problems.map(p => `--cases ${p}`))
  const list = isMap(root) ? mapGet(root, 'cases') : root
  if (!isSeq(list)) throw new ConfigInvalidError([`${at(root)}: expected a list of cases (or a mapping with "cases")`])
  const failures: Array<{ at: string, caller: string, method: string, path: string, expected: string, got: string, rule: string | null, reason: string }> = []
  for (const [i, item] of list.items.entries()) {
    if (!isMap(item)) throw new ConfigInvalidError([`${at(item as never)}: case ${i + 1}: expected caller, method, path, expect`])
    const get = (k: string): string | undefined => { const n = mapGet(item, k); return isScalar(n) ? String(n.value) : undefined }
    const [caller, method, path, expect, port] = [get('caller'), get('method') ?? 'GET', get('path'), get('expect'), get('port')]
    if (caller === undefined || (path === undefined) === (port === undefined) || !['allow', 'deny', '400'].includes(expect ?? '')) {
      throw new ConfigInvalidError([`${at(item)}: case ${i + 1}: needs caller, path (or port, for a TCP connection) and expect (allow, deny or 400)`])
    }
    const o = evaluate(compiled, caller, port !== undefined ? { port: Number(port) } : { method, path: path! })
    if (o.outcome !== expect) failures.push({ at: at(item), caller, method: port !== undefined ? 'TCP' : method, path: port !== undefined ? `port ${port}` : path!, expected: expect!, got: o.outcome, rule: o.rule, reason: o.why })
  }
  const total = list.items.length
  if (c.output !== 'table') io.out(formatData(c.output, { cases: total, passed: total - failures.length, failures }))
  else {
    for (const f of failures) io.out(`FAIL ${f.at}: ${f.method} ${f.path} from ${f.caller}: expected ${f.expected}, got ${f.got}${f.rule === null ? '' : ` (rule ${f.rule})`}: ${f.reason}\n`)
    io.out(`${total - failures.length} of ${total} cases pass\n`)
  }
  return failures.length === 0 ? 0 : 1
}
