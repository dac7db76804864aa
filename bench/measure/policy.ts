// Policy evaluation alone: decisions per second for policies of 10, 100 and 1,000 rules from the
// same generator as the gatehouse target (the matching rule second to last), through decide() on
// the compiled policy, and with the request target normalized first (what inbound.ts does per request).
import { parsePolicy } from '../../src/policy/load.ts'
import { compilePolicy } from '../../src/policy/compile.ts'
import { decide, type RequestFacts } from '../../src/policy/decide.ts'
import { normalizeTarget } from '../../src/policy/normalize.ts'
import { policyYaml, BENCH_PATH, BENCH_METHOD } from '../lib/policy-gen.ts'
import { IDS, TRUST_DOMAIN } from '../lib/pki.ts'
import { rateSync } from './rate.ts'

export interface PolicyRate { rules: number, decisionsPerSecond: number, normalizeAndDecidePerSecond: number, rule: string | null }

export function policyRates (seconds: number, sizes = [10, 100, 1000]): PolicyRate[] {
  const caller = { id: IDS.client, trustDomain: TRUST_DOMAIN, segments: new URL(IDS.client).pathname.split('/').slice(1) }
  return sizes.map((rules) => {
    const compiled = compilePolicy(parsePolicy(policyYaml({ rules, caller: IDS.client, trustDomain: TRUST_DOMAIN }), `bench-${rules}.yaml`).policy)
    const facts: RequestFacts = { caller, method: BENCH_METHOD, path: BENCH_PATH, segments: BENCH_PATH.split('/').slice(1) }
    const d = decide(compiled, facts)
    if (!d.allowed) throw new Error(`the ${rules}-rule bench policy denies the bench request (${d.reason})`)
    let sink = 0
    const decisionsPerSecond = rateSync(() => { sink += decide(compiled, facts).allowed ? 1 : 0 }, seconds)
    const normalizeAndDecidePerSecond = rateSync(() => {
      const n = normalizeTarget(BENCH_PATH)
      if (n.ok) sink += decide(compiled, { caller, method: BENCH_METHOD, path: n.path, segments: n.segments }).allowed ? 1 : 0
    }, seconds)
    if (sink === 0) throw new Error('unreachable')
    return { rules, decisionsPerSecond, normalizeAndDecidePerSecond, rule: d.rule }
  })
}
