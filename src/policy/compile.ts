import type { Policy, PolicyRule } from './load.ts'
import { splitPattern, exactPathKey, type SegmentPattern } from './patterns.ts'

// Rules are compiled once per load into matchers over pre-split segments. Exact callers go into a
// Set per rule (one hash lookup), methods into a Set, and path patterns into segment arrays, so
// evaluating a request compares only the segments it must.

export interface CompiledRule {
  name: string
  /** A shadow rule: evaluated for shadowDecision only. */
  shadow: boolean
  callersExact: Set<string>
  /** Caller patterns per trust domain: segments of the ID path. */
  callerPatterns: Array<{ trustDomain: string, pattern: SegmentPattern }>
  methods: Set<string> | undefined
  pathsExact: Set<string> | undefined
  pathPatterns: SegmentPattern[]
  /** A TCP rule's app ports; undefined for an HTTP rule (and an HTTP rule never matches a connection). */
  ports: Set<number> | undefined
}

export interface CompiledPolicy {
  mode: 'enforce' | 'audit'
  /** Enforced rules only, in file order. */
  deny: CompiledRule[]
  allow: CompiledRule[]
  /** Enforced and shadow rules together, in file order: what would decide if the shadow rules were enforced. */
  shadow: { deny: CompiledRule[], allow: CompiledRule[] } | undefined
  /** The policy's canary paths as a deny rule named `canary` from any caller, checked first; undefined without any. */
  canary: CompiledRule | undefined
  /** As written, for the compromise detectors. */
  canaryPaths: readonly string[]
}

/** Who a rule (or a quarantine entry) names: exact IDs in a Set, patterns as segments per trust domain. */
export type CallerMatcher = Pick<CompiledRule, 'callersExact' | 'callerPatterns'>

export function compileCallers (from: readonly string[]): CallerMatcher {
  const m: CallerMatcher = { callersExact: new Set(), callerPatterns: [] }
  for (const id of from) {
    if (!id.includes('*')) { m.callersExact.add(id); continue }
    const parts = /^spiffe:\/\/([^/]+)(\/.*)$/.exec(id)!
    m.callerPatterns.push({ trustDomain: parts[1]!, pattern: splitPattern(parts[2]!) })
  }
  return m
}

function compileRule (rule: PolicyRule): CompiledRule {
  const compiled: CompiledRule = {
    name: rule.name,
    shadow: rule.mode === 'audit',
    callersExact: new Set(),
    callerPatterns: [],
    methods: rule.methods === undefined ? undefined : new Set(rule.methods),
    pathsExact: undefined,
    pathPatterns: [],
    ports: rule.ports === undefined ? undefined : new Set(rule.ports)
  }
  Object.assign(compiled, compileCallers(rule.from))
  if (rule.paths !== undefined) {
    compiled.pathsExact = new Set()
    for (const p of rule.paths) {
      if (p.includes('*')) compiled.pathPatterns.push(splitPattern(p))
      else compiled.pathsExact.add(exactPathKey(p))
    }
  }
  return compiled
}

export function compilePolicy (policy: Policy): CompiledPolicy {
  const deny = policy.deny.map(compileRule)
  const allow = policy.rules.map(compileRule)
  const hasShadow = [...deny, ...allow].some(r => r.shadow)
  const canary = policy.canary.length === 0 ? undefined : compileRule({ name: 'canary', from: [], paths: policy.canary })
  return {
    mode: policy.mode,
    deny: deny.filter(r => !r.shadow),
    allow: allow.filter(r => !r.shadow),
    shadow: hasShadow ? { deny, allow } : undefined,
    canary,
    canaryPaths: policy.canary
  }
}
