import { createHash } from 'node:crypto'
import { isMap, isSeq, isScalar, type Node } from 'yaml'
import { readYamlSource, mapGet as get, unknownKeys } from '../yaml-source.ts'
import { PolicyInvalidError } from '../errors.ts'
import { isValidMethod } from './normalize.ts'
import { callerPatternProblem, pathPatternProblem } from './patterns.ts'

// The service owner's policy file: parse, validate every key (unknown keys are errors, since a typo
// like "method:" would otherwise silently widen a rule), and report each problem with file:line:col.
// The revision is a hash of the exact bytes, so each decision names the policy that made it.

export interface PolicyRule {
  name: string
  /** "audit": a shadow rule, evaluated and logged as shadowDecision but not enforced. */
  mode?: 'enforce' | 'audit'
  from: string[]
  methods?: string[]
  paths?: string[]
  /** Opaque TCP: the callee's app ports this rule authorizes connections to (never with methods or paths). */
  ports?: number[]
}

export interface Policy {
  version: 1
  mode: 'enforce' | 'audit'
  rules: PolicyRule[]
  deny: PolicyRule[]
  /** Trap paths no honest caller requests: always denied (rule `canary`), and reported (docs/quarantine.md). */
  canary: string[]
}

export interface LoadedPolicy { policy: Policy, revision: string, source: string }

export function policyRevision (text: string): string {
  return `sha256:${createHash('sha256').update(text).digest('hex').slice(0, 16)}`
}

/** Rule names the sidecar itself reports: a rule of the same name would make decision lines ambiguous. */
const RESERVED_NAMES = new Set(['canary', 'quarantine'])
const TOP_KEYS = ['version', 'mode', 'rules', 'deny', 'canary']
const RULE_KEYS = ['name', 'mode', 'from', 'methods', 'paths', 'ports']

export function parsePolicy (text: string, source = 'policy'): LoadedPolicy {
  const { root, at, problems } = readYamlSource(text, source)
  if (problems.length > 0) throw new PolicyInvalidError(problems)
  if (!isMap(root)) throw new PolicyInvalidError([`${at(root)}: expected a mapping with version, mode, rules and deny`])
  problems.push(...unknownKeys(root, TOP_KEYS, at, ''))

  const version = get(root, 'version')
  if (!isScalar(version) || version.value !== 1) problems.push(`${at(version ?? root)}: version: expected 1`)
  const modeNode = get(root, 'mode')
  const mode = modeNode === undefined ? 'enforce' : isScalar(modeNode) ? modeNode.value : undefined
  if (mode !== 'enforce' && mode !== 'audit') problems.push(`${at(modeNode)}: mode: expected enforce or audit, got ${JSON.stringify(mode ?? null)}`)

  const names = new Set<string>()
  const readList = (node: Node | undefined, where: string, check: (v: string) => string | undefined, required: boolean): string[] | undefined => {
    if (node === undefined) {
      if (required) problems.push(`${where}: expected a non-empty list`)
      return undefined
    }
    if (!isSeq(node) || node.items.length === 0) { problems.push(`${at(node)}: ${where.split(': ').pop()}: expected a non-empty list`); return undefined }
    const out: string[] = []
    for (const item of node.items) {
      const v = isScalar(item) ? item.value : undefined
      const problem = typeof v === 'string' ? check(v) : 'expected a string'
      if (problem !== undefined) problems.push(`${at(item as Node)}: ${where.split(': ').pop()}: ${problem}, got ${JSON.stringify(v ?? null)}`)
      else out.push(v as string)
    }
    return out
  }
  const readPorts = (node: Node | undefined, where: string): number[] | undefined => {
    if (node === undefined) return undefined
    if (!isSeq(node) || node.items.length === 0) { problems.push(`${at(node)}: ${where}.ports: expected a non-empty list of TCP port numbers`); return undefined }
    const out: number[] = []
    for (const item of node.items) {
      const v = isScalar(item) ? item.value : undefined
      if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535) out.push(v)
      else problems.push(`${at(item as Node)}: ${where}.ports: expected a port number from 1 to 65535, got ${JSON.stringify(v ?? null)}`)
    }
    return out
  }
  const readRules = (key: 'rules' | 'deny'): PolicyRule[] => {
    const node = get(root, key)
    if (node === undefined) return []
    if (!isSeq(node)) { problems.push(`${at(node)}: ${key}: expected a list of rules`); return [] }
    return node.items.flatMap((item, i) => {
      const where = `${key}[${i}]`
      if (!isMap(item)) { problems.push(`${at(item as Node)}: ${where}: expected a mapping with name, from, methods, paths`); return [] }
      problems.push(...unknownKeys(item, RULE_KEYS, at, where))
      const nameNode = get(item, 'name')
      const name = isScalar(nameNode) && typeof nameNode.value === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(nameNode.value) ? nameNode.value : undefined
      if (name === undefined) problems.push(`${at(nameNode ?? item)}: ${where}.name: expected a name of letters, digits, ".", "_" or "-" (max 63)`)
      else if (names.has(name)) problems.push(`${at(nameNode)}: ${where}.name: "${name}" is used by another rule`)
      else if (RESERVED_NAMES.has(name)) problems.push(`${at(nameNode)}: ${where}.name: "${name}" is the name decision lines give to ${name === 'canary' ? 'the canary paths' : 'quarantine denials'}; choose another`)
      else names.add(name)
      const from = readList(get(item, 'from'), `${at(item)}: ${where}.from`, callerPatternProblem, true)
      const methods = readList(get(item, 'methods'), `${at(item)}: ${where}.methods`, m => isValidMethod(m) ? undefined : 'expected an upper-case HTTP method', false)
      const paths = readList(get(item, 'paths'), `${at(item)}: ${where}.paths`, pathPatternProblem, false)
      const ports = readPorts(get(item, 'ports'), where)
      // One rule, one protocol: an HTTP rule never authorizes a TCP connection, nor the reverse.
      if (ports !== undefined && (methods !== undefined || paths !== undefined)) {
        problems.push(`${at(get(item, 'ports')!)}: ${where}.ports: a rule with ports authorizes opaque TCP connections and cannot also name ${methods !== undefined ? 'methods' : 'paths'}; split it into an HTTP rule and a TCP rule`)
      }
      const modeNode = get(item, 'mode')
      const ruleMode = modeNode === undefined ? undefined : isScalar(modeNode) ? modeNode.value : null
      if (ruleMode !== undefined && ruleMode !== 'enforce' && ruleMode !== 'audit') problems.push(`${at(modeNode)}: ${where}.mode: expected enforce or audit (a shadow rule), got ${JSON.stringify(ruleMode)}`)
      const rule: PolicyRule = { name: name ?? where, from: from ?? [] }
      if (ruleMode === 'audit') rule.mode = 'audit'
      if (methods !== undefined) rule.methods = methods
      if (paths !== undefined) rule.paths = paths
      if (ports !== undefined) rule.ports = ports
      return [rule]
    })
  }
  const rules = readRules('rules')
  const deny = readRules('deny')
  const canary = readList(get(root, 'canary'), `${at(root)}: canary`, pathPatternProblem, false) ?? []
  if (problems.length > 0) throw new PolicyInvalidError(problems)
  return { policy: { version: 1, mode: mode as 'enforce' | 'audit', rules, deny, canary }, revision: policyRevision(text), source }
}
