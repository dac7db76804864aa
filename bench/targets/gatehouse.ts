// Target 4, gatehouse: `gatehouse proxy` with the 50-rule policy (the matching rule second to last),
// the decision log written to a file (not stdout, not /dev/null), metrics on the admin port.
// With a gRPC app as its backend, "grpc gatehouse": the same sidecar and policy shape (the matching
// rule allows POST /gatehouse.test.Echo/*), sent unary calls over HTTP/2 + mTLS, forwarded to the
// app over h2c (--upstream-protocol auto, the default).
import { writeFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { BenchEnv, Target } from './target.ts'
import type { GrpcApp } from './grpc.ts'
import { stop } from '../lib/proc.ts'
import { startSidecar, scrapeCounters } from '../lib/gatehouse.ts'
import { policyYaml, BENCH_PATH } from '../lib/policy-gen.ts'
import { GRPC_MATCH, GRPC_PATH } from '../lib/grpc.ts'
import { IDS, TRUST_DOMAIN } from '../lib/pki.ts'
import { sidecarProcessEnv } from '../../src/inject/node-options.ts'

export const POLICY_RULES = 50

export async function startGatehouse (env: BenchEnv, grpc?: GrpcApp): Promise<Target> {
  const tag = grpc === undefined ? 'gatehouse' : 'grpc-gatehouse'
  const policyFile = join(env.dir, `${tag}-policy.yaml`)
  writeFileSync(policyFile, policyYaml({ rules: POLICY_RULES, caller: IDS.client, trustDomain: TRUST_DOMAIN, ...(grpc === undefined ? {} : { match: GRPC_MATCH }) }))
  const decisionLog = join(env.dir, `${tag}-decisions.log`)
  const s = await startSidecar(env.cli, { name: tag, policyFile, trustBundle: env.pki.bundle, upstreamPort: grpc?.port ?? env.appPort, identity: env.pki.server, decisionLog, ...(env.sidecarFlags === undefined ? {} : { nodeFlags: env.sidecarFlags }) })
  return {
    name: grpc === undefined ? 'gatehouse' : 'grpc gatehouse',
    description: `gatehouse proxy: ${POLICY_RULES}-rule policy (match at rule ${POLICY_RULES - 1}), decision log to a file, metrics on, ${Object.entries(sidecarProcessEnv()).map(([k, v]) => `${k}="${v}"`).join(' ')} as injected${grpc === undefined ? '' : '; gRPC over HTTP/2 + mTLS in, h2c to the app (--upstream-protocol auto)'}`,
    origin: `https://127.0.0.1:${s.inboundPort}`,
    path: grpc === undefined ? BENCH_PATH : GRPC_PATH,
    tls: true,
    handshakes: grpc === undefined ? 'mtls' : 'none',
    procs: [s.proc],
    ...(grpc === undefined ? {} : { app: grpc.proc, grpc: { driver: 'node' as const, authority: `127.0.0.1:${s.inboundPort}` } }),
    notes: [],
    inspect: async () => ({ metrics: await scrapeCounters(s.adminPort), decisionLogBytes: statSync(decisionLog).size }),
    stop: async () => { await stop(s.proc, 15_000) }
  }
}
