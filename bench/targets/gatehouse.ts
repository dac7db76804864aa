// Target 4, gatehouse: `gatehouse proxy` with the 50-rule policy (the matching rule second to last),
// the decision log written to a file (not stdout, not /dev/null), metrics on the admin port.
import { writeFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { BenchEnv, Target } from './target.ts'
import { stop } from '../lib/proc.ts'
import { startSidecar, scrapeCounters } from '../lib/gatehouse.ts'
import { policyYaml, BENCH_PATH } from '../lib/policy-gen.ts'
import { IDS, TRUST_DOMAIN } from '../lib/pki.ts'
import { sidecarProcessEnv } from '../../src/inject/node-options.ts'

export const POLICY_RULES = 50

export async function startGatehouse (env: BenchEnv): Promise<Target> {
  const policyFile = join(env.dir, 'gatehouse-policy.yaml')
  writeFileSync(policyFile, policyYaml({ rules: POLICY_RULES, caller: IDS.client, trustDomain: TRUST_DOMAIN }))
  const decisionLog = join(env.dir, 'gatehouse-decisions.log')
  const s = await startSidecar(env.cli, { name: 'gatehouse', policyFile, trustBundle: env.pki.bundle, upstreamPort: env.appPort, identity: env.pki.server, decisionLog })
  return {
    name: 'gatehouse',
    description: `gatehouse proxy: ${POLICY_RULES}-rule policy (match at rule ${POLICY_RULES - 1}), decision log to a file, metrics on, ${Object.entries(sidecarProcessEnv()).map(([k, v]) => `${k}="${v}"`).join(' ')} as injected`,
    origin: `https://127.0.0.1:${s.inboundPort}`,
    path: BENCH_PATH,
    tls: true,
    handshakes: 'mtls',
    procs: [s.proc],
    notes: [],
    inspect: async () => ({ metrics: await scrapeCounters(s.adminPort), decisionLogBytes: statSync(decisionLog).size }),
    stop: async () => { await stop(s.proc, 15_000) }
  }
}
