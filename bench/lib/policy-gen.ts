// A realistic policy of N rules for one service: a few deny rules first, then allow rules for many
// callers (exact IDs and namespace patterns), methods and path patterns. The one rule that allows
// the bench request comes second to last, and some earlier rules name the same caller with other
// paths or methods, so evaluation walks nearly the whole list and tests more than the caller.
// `match` changes what that rule allows (the gRPC targets: POST /gatehouse.test.Echo/*).

export interface PolicySpec { rules: number, caller: string, trustDomain: string, match?: { methods: string[], paths: string[] } }

/** The request every target is sent: it matches the rule near the end. */
export const BENCH_PATH = '/v1/orders/12345'
export const BENCH_METHOD = 'GET'

export function policyYaml (spec: PolicySpec): string {
  const td = spec.trustDomain
  const q = (s: string): string => JSON.stringify(s)
  const lines = ['version: 1', 'mode: enforce', 'deny:']
  lines.push('  - name: quarantined', `    from: [${q(`spiffe://${td}/ns/legacy/sa/old`)}, ${q(`spiffe://${td}/ns/sandbox/*`)}]`)
  lines.push('  - name: no-admin-from-outside', `    from: [${q(`spiffe://${td}/ns/public/**`)}]`, '    paths: ["/admin", "/admin/**"]')
  lines.push('rules:')
  const allowCount = Math.max(1, spec.rules - 2)
  const matchAt = Math.max(0, allowCount - 2)
  for (let i = 0; i < allowCount; i++) {
    if (i === matchAt) {
      const m = spec.match ?? { methods: ['GET', 'HEAD'], paths: ['/v1/orders/*', '/v1/orders/*/items/**'] }
      lines.push('  - name: orders-read', `    from: [${q(spec.caller)}, ${q(`spiffe://${td}/ns/billing/*`)}]`, `    methods: [${m.methods.join(', ')}]`, `    paths: [${m.paths.map(q).join(', ')}]`)
      continue
    }
    const ns = `team${i % 17}`
    // Every 10th rule names the bench caller too, but for other paths: the caller test passes, the path test does not.
    const from = i % 10 === 0
      ? [spec.caller, `spiffe://${td}/ns/${ns}/sa/svc${i}`]
      : [`spiffe://${td}/ns/${ns}/sa/svc${i}`, `spiffe://${td}/ns/${ns}-jobs/*`]
    lines.push(`  - name: rule-${i}-${ns}`, `    from: [${from.map(q).join(', ')}]`)
    if (i % 3 !== 0) lines.push(`    methods: [${i % 3 === 1 ? 'GET' : 'POST, PUT'}]`)
    lines.push(`    paths: [${q(`/v1/resource${i}`)}, ${q(`/v1/resource${i}/**`)}, ${q(`/v2/*/things${i}`)}]`)
  }
  lines.push('')
  return lines.join('\n')
}
