import { SpiffeId, trustDomainProblem } from '../spiffe/id.ts'
import { normalizeTarget } from './normalize.ts'
import type { Policy, PolicyRule } from './load.ts'

// Rules are compiled once per load into matchers over pre-split segments. Exact callers go into a
// Set per rule (one hash lookup), methods into a Set, and path patterns into segment arrays, so
// evaluating a request compares only the segments it must.

const ANY_ONE = '*'
const ANY_DEPTH = '**'

export interface SegmentPattern { segments: string[], anyDepth: boolean }

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

export function splitPattern (path: string): SegmentPattern {
  const segments = path.split('/').slice(1)
  const anyDepth = segments.at(-1) === ANY_DEPTH
  return { segments: anyDepth ? segments.slice(0, -1) : segments, anyDepth }
}

/** Validation for load.ts: "spiffe://TD/seg/*" ("*" one segment, final "**" any depth). */
export function callerPatternProblem (p: string): string | undefined {
  const m = /^spiffe:\/\/([^/]+)(\/.*)?$/.exec(p)
  if (m === null) return 'expected a SPIFFE ID or pattern like spiffe://cluster.local/ns/billing/*'
  if (trustDomainProblem(m[1]!) !== undefined) return m[1]!.includes('*') ? 'the trust domain of a caller pattern must be written out in full' : `the ${trustDomainProblem(m[1]!)!}`
  const segs = (m[2] ?? '').split('/').slice(1)
  if (segs.length === 0) return 'a caller needs a path (spiffe://TD/** for every workload of a trust domain)'
  for (const [i, s] of segs.entries()) {
    if (s === ANY_DEPTH && i !== segs.length - 1) return '"**" may only be the last segment'
    if (s === ANY_ONE || s === ANY_DEPTH) continue
    if (SpiffeId.tryParse(`spiffe://${m[1]!}/${s}`) === undefined) return `segment "${s}" is not valid in a SPIFFE ID`
  }
  return undefined
}

function normalizedSegment (s: string): string {
  if (s === ANY_ONE || s === ANY_DEPTH) return s
  const n = normalizeTarget(`/${s}`)
  return n.ok ? n.path.slice(1) : s
}

/** Validation for load.ts: "/v1/charges", "/v1/*\/items", "/v1/**". Patterns are in normalized form. */
export function pathPatternProblem (p: string): string | undefined {
  if (!p.startsWith('/')) return 'expected a path starting with "/"'
  const segs = p.split('/').slice(1)
  for (const [i, s] of segs.entries()) {
    if (s === ANY_DEPTH && i !== segs.length - 1) return '"**" may only be the last segment'
    if (s === '' && i !== segs.length - 1) return 'empty segment ("//"): paths are matched after merging slashes'
    if (s === '.' || s === '..') return 'dot segments never match: paths are matched after resolving them'
    if (/[?#;\\\s]/.test(s) || /%(2f|5c|00)/i.test(s)) return 'a path pattern holds no query, fragment, ";", "\\", space or encoded slash'
    if (s !== ANY_ONE && s !== ANY_DEPTH && s.includes('*')) return '"*" must be a whole segment'
    // Requests are matched in normalized form ("/%7Euser" arrives as "/~user", "%3a" as ":", other
    // escapes upper-cased), so a pattern spelled otherwise would never match: a deny that denies nothing.
    if (normalizedSegment(s) !== s) return `write this segment as "${normalizedSegment(s)}": paths are matched in normalized form`
  }
  // Wildcards match segments, and a request's segments never include the empty one after a final "/".
  if (p.endsWith('/') && p.includes('*')) return 'a pattern with "*" cannot end in "/" (it would never match)'
  return undefined
}

/**
 * Segment match: "*" is exactly one segment; a final "**" is any depth, including none
 * ("/admin/**" covers "/admin" too, so a deny on it cannot be sidestepped by dropping the slash).
 */
export function matchSegments (pattern: SegmentPattern, segments: readonly string[]): boolean {
  const n = pattern.segments.length
  if (pattern.anyDepth ? segments.length < n : segments.length !== n) return false
  for (let i = 0; i < n; i++) {
    const p = pattern.segments[i]!
    if (p !== ANY_ONE && p !== segments[i]) return false
  }
  return true
}

/**
 * Exact paths match with or without one trailing slash: most frameworks route "/admin/" to "/admin",
 * so a deny on "/admin" must cover both.
 */
export function exactPathKey (path: string): string {
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path
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
