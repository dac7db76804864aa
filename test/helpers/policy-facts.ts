import { parsePolicy } from '../../src/policy/load.ts'
import { compilePolicy, type CompiledPolicy } from '../../src/policy/compile.ts'
import type { Caller, RequestFacts } from '../../src/policy/decide.ts'
import { normalizeTarget } from '../../src/policy/normalize.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'

// What the policy tests (test/policy-parse, policy-decide and policy-store) share: an annotated
// example policy, and the request facts decide() takes, built from a SPIFFE ID, a method and a target.

// An annotated policy using every field, comments included, byte for byte.
export const ANNOTATED_EXAMPLE = `version: 1
mode: enforce                 # or audit: would-be denials are logged, then allowed
rules:                        # allow rules; a request is allowed if any rule matches
  - name: orders-create-charges
    from: ["spiffe://cluster.local/ns/orders/sa/api", "spiffe://cluster.local/ns/billing/*"]
    methods: [POST]           # optional; absent = any method
    paths: ["/v1/charges", "/v1/charges/**"]   # optional; * = one segment, ** = any depth
deny:                         # checked first; any match denies, whatever the allow rules say
  - name: quarantined
    from: ["spiffe://cluster.local/ns/legacy/sa/old"]
`

export function callerOf (id: string): Caller {
  const s = SpiffeId.parse(id)
  return { id: s.toString(), trustDomain: s.trustDomain, segments: s.isRoot ? [] : s.path.split('/').slice(1) }
}

export function request (id: string, method: string, target: string): RequestFacts {
  const n = normalizeTarget(target)
  if (!n.ok) throw new Error(`test bug: ${target} is refused (${n.reason})`)
  return { caller: callerOf(id), method, path: n.path, segments: n.segments }
}

export function compile (yaml: string): CompiledPolicy {
  return compilePolicy(parsePolicy(yaml, 'test.yaml').policy)
}
