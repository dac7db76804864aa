import type { SpiffeId } from '../spiffe/id.ts'
import type { CompiledPolicy, CompiledRule, CallerMatcher } from './compile.ts'
import { matchSegments, exactPathKey } from './patterns.ts'

// A decision is a value. `allowed` is what the proxy does; `decision` is what the policy says
// (in audit mode a "deny" decision is logged and the request still goes through).

/** A SPIFFE ID as a caller: its path split once, for the segment matchers. */
export function callerOf (id: SpiffeId): Caller {
  return { id: id.toString(), trustDomain: id.trustDomain, segments: id.path.split('/').slice(1) }
}

export interface Caller {
  id: string
  trustDomain: string
  /** Segments of the SPIFFE ID path, split once per connection. */
  segments: readonly string[]
}

/** An HTTP request (method and path), or an opaque TCP connection to an app port (`port`). */
export interface RequestFacts { caller: Caller, method: string, path: string, segments: readonly string[], port?: number }

/** The rule is for this kind of traffic: TCP rules (ports) only match connections, HTTP rules only requests. */
const sameProtocol = (rule: CompiledRule, req: RequestFacts): boolean =>
  req.port === undefined ? rule.ports === undefined : rule.ports?.has(req.port) === true

export type Reason = 'deny-rule' | 'allow-rule' | 'no-matching-rule'

export interface Decision {
  decision: 'allow' | 'deny'
  allowed: boolean
  mode: 'enforce' | 'audit'
  rule: string | null
  reason: Reason
  /** Present when the policy has shadow rules: the decision with them enforced too. */
  shadowDecision?: 'allow' | 'deny'
  shadowRule?: string | null
}

export function callerMatches (rule: CallerMatcher, caller: Caller): boolean {
  if (rule.callersExact.has(caller.id)) return true
  for (const p of rule.callerPatterns) {
    if (p.trustDomain === caller.trustDomain && matchSegments(p.pattern, caller.segments)) return true
  }
  return false
}

export function ruleMatches (rule: CompiledRule, req: RequestFacts): { caller: boolean, method: boolean, path: boolean, port: boolean } {
  const caller = callerMatches(rule, req.caller)
  if (req.port !== undefined || rule.ports !== undefined) return { caller, method: true, path: true, port: sameProtocol(rule, req) }
  const method = rule.methods === undefined || rule.methods.has(req.method)
  const path = rule.pathsExact === undefined ||
    rule.pathsExact.has(exactPathKey(req.path)) ||
    rule.pathPatterns.some(p => matchSegments(p, req.segments))
  return { caller, method, path, port: true }
}

// The rules whose `from` names a caller, per rule list (so per compiled policy: a reload brings new
// lists and a fresh cache). Callers are few and long-lived (one per peer workload), and the caller
// test is most of the cost of a long policy, so each caller's candidate list is worked out once.
const byCaller = new WeakMap<readonly CompiledRule[], Map<string, CompiledRule[]>>()
const CALLERS_CACHED = 1024

function rulesFor (rules: CompiledRule[], caller: Caller): CompiledRule[] {
  let cache = byCaller.get(rules)
  if (cache === undefined) { cache = new Map(); byCaller.set(rules, cache) }
  let candidates = cache.get(caller.id)
  if (candidates === undefined) {
    candidates = rules.filter(rule => callerMatches(rule, caller))
    if (cache.size >= CALLERS_CACHED) cache.clear() // many distinct callers: recompute rather than grow
    cache.set(caller.id, candidates)
  }
  return candidates
}

function firstMatch (rules: CompiledRule[], req: RequestFacts): CompiledRule | undefined {
  // In rule order, among the rules that name this caller: method (a Set lookup), then path.
  for (const rule of rulesFor(rules, req.caller)) {
    if (!sameProtocol(rule, req)) continue
    if (rule.methods !== undefined && !rule.methods.has(req.method)) continue
    if (rule.pathsExact !== undefined && !rule.pathsExact.has(exactPathKey(req.path)) && !rule.pathPatterns.some(p => matchSegments(p, req.segments))) continue
    return rule
  }
  return undefined
}

/** A canary path (any caller, HTTP only): a trap, denied before every other rule. */
function isCanary (canary: CompiledRule | undefined, req: RequestFacts): boolean {
  if (canary === undefined || req.port !== undefined) return false
  return canary.pathsExact!.has(exactPathKey(req.path)) || canary.pathPatterns.some(p => matchSegments(p, req.segments))
}

function evaluate (deny: CompiledRule[], allow: CompiledRule[], req: RequestFacts, canary?: CompiledRule): { decision: 'allow' | 'deny', rule: string | null, reason: Reason } {
  if (isCanary(canary, req)) return { decision: 'deny', rule: 'canary', reason: 'deny-rule' }
  const denied = firstMatch(deny, req)
  if (denied !== undefined) return { decision: 'deny', rule: denied.name, reason: 'deny-rule' }
  const allowed = firstMatch(allow, req)
  if (allowed !== undefined) return { decision: 'allow', rule: allowed.name, reason: 'allow-rule' }
  return { decision: 'deny', rule: null, reason: 'no-matching-rule' }
}

export function decide (policy: CompiledPolicy, req: RequestFacts): Decision {
  const e = evaluate(policy.deny, policy.allow, req, policy.canary)
  const d: Decision = { ...e, allowed: e.decision === 'allow' || policy.mode === 'audit', mode: policy.mode }
  if (policy.shadow !== undefined) {
    const s = evaluate(policy.shadow.deny, policy.shadow.allow, req, policy.canary)
    d.shadowDecision = s.decision
    d.shadowRule = s.rule
  }
  return d
}
