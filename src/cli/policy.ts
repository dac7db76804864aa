import { isMap, isSeq, isScalar } from 'yaml'
import { loadConfig, type Schema } from '../config.ts'
import { ConfigInvalidError, PolicyInvalidError } from '../errors.ts'
import { parsePolicy } from '../policy/load.ts'
import { compilePolicy } from '../policy/compile.ts'
import { decide, ruleMatches, type RequestFacts } from '../policy/decide.ts'
import { normalizeTarget } from '../policy/normalize.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { readYamlSource, mapGet } from '../yaml-source.ts'
import { readArg } from './check.ts'
import type { Runner } from './runner.ts'

export const policySchemas = {
  'policy check': {},
  'policy explain': {
    caller: { kind: 'string', required: true, help: 'caller SPIFFE ID' },
    method: { kind: 'string', default: 'GET', help: 'HTTP method' },
    path: { kind: 'string', required: true, help: 'request target, e.g. /v1/charges?x=1' }
  },
  'policy test': {
    cases: { kind: 'string', required: true, help: 'YAML list of {caller, method, path, expect: allow|deny|400}' }
  }
} as const satisfies Record<string, Schema>

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
    io.out(`OK ${revision}: ${policy.rules.length} allow rule(s), ${policy.deny.length} deny rule(s), mode ${policy.mode}\n`)
    return 0
  } catch (err) {
    if (!(err instanceof PolicyInvalidError)) throw err
    io.out(`${err.problems.join('\n')}\n${err.problems.length} problem(s)\n`)
    return 1
  }
}

interface Outcome { outcome: 'allow' | 'deny' | '400', rule: string | null, why: string, facts?: RequestFacts }

function evaluate (compiled: ReturnType<typeof compilePolicy>, caller: string, method: string, target: string): Outcome {
  const id = SpiffeId.parse(caller)
  const n = normalizeTarget(target)
  if (!n.ok) return { outcome: '400', rule: null, why: `refused before the policy: ${n.reason}` }
  const facts: RequestFacts = { caller: { id: id.toString(), trustDomain: id.trustDomain, segments: id.path.split('/').slice(1) }, method, path: n.path, segments: n.segments }
  const d = decide(compiled, facts)
  return { outcome: d.decision, rule: d.rule, why: d.reason, facts }
}

export const policyExplain: Runner = async (argv, io) => {
  const c = loadConfig('policy explain', policySchemas['policy explain'], { argv })
  const { policy, revision } = loadPolicyArg(c.positionals, 'policy explain')
  const compiled = compilePolicy(policy)
  const o = evaluate(compiled, c.caller, c.method, c.path)
  io.out(`${o.outcome.toUpperCase()}${o.rule === null ? '' : ` by rule "${o.rule}"`} (${o.why}), policy ${revision}, mode ${policy.mode}\n`)
  if (o.facts === undefined) return 0
  io.out(`normalized path: ${o.facts.path}\n`)
  const shadow = compiled.shadow
  for (const [kind, rules] of [['deny', shadow?.deny ?? compiled.deny], ['allow', shadow?.allow ?? compiled.allow]] as const) {
    for (const rule of rules) {
      const m = ruleMatches(rule, o.facts)
      const misses = [m.caller ? '' : 'caller', m.method ? '' : 'method', m.path ? '' : 'path'].filter(x => x !== '')
      io.out(`  ${kind} ${rule.name}${rule.shadow ? ' (shadow)' : ''}: ${misses.length === 0 ? 'matches' : `no match: wrong ${misses.join(', ')}`}\n`)
    }
  }
  return 0
}

export const policyTest: Runner = async (argv, io) => {
  const c = loadConfig('policy test', policySchemas['policy test'], { argv })
  const { policy } = loadPolicyArg(c.positionals, 'policy test')
  const compiled = compilePolicy(policy)
  const { root, at, problems } = readYamlSource(readArg('--cases', c.cases), c.cases)
  if (problems.length > 0) throw new ConfigInvalidError(problems.map(p => `--cases ${p}`))
  const list = isMap(root) ? mapGet(root, 'cases') : root
  if (!isSeq(list)) throw new ConfigInvalidError([`${at(root)}: expected a list of cases (or a mapping with "cases")`])
  let failed = 0
  for (const [i, item] of list.items.entries()) {
    if (!isMap(item)) throw new ConfigInvalidError([`${at(item as never)}: case ${i + 1}: expected caller, method, path, expect`])
    const get = (k: string): string | undefined => { const n = mapGet(item, k); return isScalar(n) ? String(n.value) : undefined }
    const [caller, method, path, expect] = [get('caller'), get('method') ?? 'GET', get('path'), get('expect')]
    if (caller === undefined || path === undefined || !['allow', 'deny', '400'].includes(expect ?? '')) {
      throw new ConfigInvalidError([`${at(item)}: case ${i + 1}: needs caller, path and expect (allow, deny or 400)`])
    }
    const o = evaluate(compiled, caller, method, path)
    if (o.outcome !== expect) {
      failed++
      io.out(`FAIL ${at(item)}: ${method} ${path} from ${caller}: expected ${expect}, got ${o.outcome}${o.rule === null ? '' : ` (rule ${o.rule})`}: ${o.why}\n`)
    }
  }
  io.out(`${list.items.length - failed} of ${list.items.length} cases pass\n`)
  return failed === 0 ? 0 : 1
}
