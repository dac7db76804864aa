import type { CompiledPolicy, CompiledRule } from './compile.ts'
import { matchSegments, exactPathKey } from './compile.ts'

// A decision is a value. `allowed` is what the proxy does; `decision` is what the policy says
// (in audit mode a "deny" decision is logged and the request still goes through).

export interface Caller {
  id: string
  trustDomain: string
  /** Segments of the SPIFFE ID path, split once per connection. */
  segments: readonly string[]
}

export interface RequestFacts { caller: Caller, method: string, path: string, segments: readonly string[] }

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

function callerMatches (rule: CompiledRule, caller: Caller): boolean {
  if (rule.callersExact.has(caller.id)) return true
  for (const p of rule.callerPatterns) {
    if (p.trustDomain === caller.trustDomain && matchSegments(p.pattern, caller.segments)) return true
  }
  return false
}

export function ruleMatches (rule: CompiledRule, req: RequestFacts): { caller: boolean, method: boolean, path: boolean } {
  const caller = callerMatches(rule, req.caller)
  const method = rule.methods === undefined || rule.methods.has(req.method)
  const path = rule.pathsExact === undefined ||
    rule.pathsExact.has(exactPathKey(req.path)) ||
    rule.pathPatterns.some(p => matchSegments(p, req.segments))
  return { caller, method, path }
}

function firstMatch (rules: CompiledRule[], req: RequestFacts): CompiledRule | undefined {
  // Cheapest test first: caller (a Set lookup), then method, then path.
  for (const rule of rules) {
    if (!callerMatches(rule, req.caller)) continue
    if (rule.methods !== undefined && !rule.methods.has(req.method)) continue
    if (rule.pathsExact !== undefined && !rule.pathsExact.has(exactPathKey(req.path)) && !rule.pathPatterns.some(p => matchSegments(p, req.segments))) continue
    return rule
  }
  return undefined
}

function evaluate (deny: CompiledRule[], allow: CompiledRule[], req: RequestFacts): { decision: 'allow' | 'deny', rule: string | null, reason: Reason } {
  const denied = firstMatch(deny, req)
  if (denied !== undefined) return { decision: 'deny', rule: denied.name, reason: 'deny-rule' }
  const allowed = firstMatch(allow, req)
  if (allowed !== undefined) return { decision: 'allow', rule: allowed.name, reason: 'allow-rule' }
  return { decision: 'deny', rule: null, reason: 'no-matching-rule' }
}

export function decide (policy: CompiledPolicy, req: RequestFacts): Decision {
  const e = evaluate(policy.deny, policy.allow, req)
  const d: Decision = { ...e, allowed: e.decision === 'allow' || policy.mode === 'audit', mode: policy.mode }
  if (policy.shadow !== undefined) {
    const s = evaluate(policy.shadow.deny, policy.shadow.allow, req)
    d.shadowDecision = s.decision
    d.shadowRule = s.rule
  }
  return d
}
