// Target 5, gatehouse two-hop: the load generator plays the calling app and sends plain HTTP through
// sidecar A's outbound listener (HTTP_PROXY style: absolute-form `GET http://b.internal/...`); A
// opens mTLS to sidecar B's inbound listener, which applies the 50-rule policy, logs the decision
// to a file and forwards to the app. Between A and B the calls travel as streams on one multiplexed
// HTTP/2 mTLS link (src/proxy/mesh-link.ts), whatever protocol the app spoke to A. With identity 'ca'
// both sidecars get short-lived SVIDs from `gatehouse ca serve` and rotate them under load (the
// rotation measurement). With a gRPC app as B's backend, "grpc two-hop": the load generator plays a
// grpc-js client with grpc_proxy set, opening a CONNECT tunnel to b.internal:80 on A's outbound port
// and speaking h2c inside it; B forwards to the app over h2c.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { BenchEnv, Target } from './target.ts'
import { stop, type Started } from '../lib/proc.ts'
import { startSidecar, startCa, joinToken, scrapeCounters } from '../lib/gatehouse.ts'
import { policyYaml, BENCH_PATH } from '../lib/policy-gen.ts'
import { IDS, TRUST_DOMAIN } from '../lib/pki.ts'
import { GRPC_MATCH, GRPC_PATH } from '../lib/grpc.ts'
import { POLICY_RULES } from './gatehouse.ts'
import type { GrpcApp } from './grpc.ts'

export type TwoHopIdentity = { kind: 'static' } | { kind: 'ca', leafTtl: string }

export interface TwoHop extends Target {
  /** identity.rotated events seen on each sidecar's operational log so far. */
  rotations: () => { a: number, b: number, renewalFailures: number }
  ca: Started | undefined
  /** Time from start to ready of each sidecar (B first, then A). */
  readyMs: { a: number, b: number }
}

/** `meshHttp1`: sidecar A sends the app's HTTP/1.1 calls on kept-alive HTTP/1.1 mTLS connections (--mesh-http1) instead of the HTTP/2 link. */
export async function startTwoHop (env: BenchEnv, identity: TwoHopIdentity, name = 'gatehouse two-hop', grpc?: GrpcApp, meshHttp1 = false): Promise<TwoHop> {
  const tag = `${identity.kind === 'ca' ? 'rot' : 'hop'}${grpc === undefined ? '' : '-grpc'}${meshHttp1 ? '-h1' : ''}`
  const file = (f: string): string => join(env.dir, `${tag}-${f}`)
  const started: Started[] = []
  const nodeFlags = env.sidecarFlags === undefined ? {} : { nodeFlags: env.sidecarFlags }
  try {
    let ids: { a: Parameters<typeof startSidecar>[1]['identity'], b: Parameters<typeof startSidecar>[1]['identity'] }
    let ca: Started | undefined
    if (identity.kind === 'ca') {
      const c = await startCa(env.cli, env.pki.caDir, identity.leafTtl)
      ca = c.proc
      started.push(c.proc)
      writeFileSync(file('a-token'), joinToken(env.cli, env.pki.caDir, IDS.caller))
      writeFileSync(file('b-token'), joinToken(env.cli, env.pki.caDir, IDS.server))
      ids = { a: { caUrl: c.url, tokenFile: file('a-token') }, b: { caUrl: c.url, tokenFile: file('b-token') } }
    } else {
      ids = { a: env.pki.caller, b: env.pki.server }
    }
    writeFileSync(file('b-policy.yaml'), policyYaml({ rules: POLICY_RULES, caller: IDS.caller, trustDomain: TRUST_DOMAIN, ...(grpc === undefined ? {} : { match: GRPC_MATCH }) }))
    writeFileSync(file('a-policy.yaml'), 'version: 1\nrules: []\n')
    const b = await startSidecar(env.cli, { name: `${name} B (inbound)`, policyFile: file('b-policy.yaml'), trustBundle: env.pki.bundle, upstreamPort: grpc?.port ?? env.appPort, identity: ids.b, decisionLog: file('b-decisions.log'), ...nodeFlags })
    started.push(b.proc)
    writeFileSync(file('a-routes.yaml'), `version: 1\nroutes:\n  - host: b.internal\n    address: 127.0.0.1:${b.inboundPort}\n    id: ${IDS.server}\n`)
    const a = await startSidecar(env.cli, { name: `${name} A (outbound)`, policyFile: file('a-policy.yaml'), trustBundle: env.pki.bundle, upstreamPort: env.appPort, identity: ids.a, routesFile: file('a-routes.yaml'), decisionLog: file('a-decisions.log'), ...nodeFlags, ...(meshHttp1 ? { proxyFlags: ['--mesh-http1', 'true'] } : {}) })
    started.push(a.proc)
    const count = (p: Started, ev: string): number => p.events.get(ev) ?? 0
    return {
      name,
      description: grpc === undefined
        ? `app -> sidecar A outbound (HTTP/1.1, absolute form) -> ${meshHttp1 ? 'kept-alive HTTP/1.1 mTLS connections (--mesh-http1)' : 'HTTP/2 mTLS link'} -> sidecar B inbound (${POLICY_RULES}-rule policy, decision log to a file) -> app${identity.kind === 'ca' ? `; CA-issued SVIDs, leaf TTL ${identity.leafTtl}` : ''}`
        : `gRPC client -> CONNECT b.internal:80 tunnel, h2c, to sidecar A outbound -> HTTP/2 mTLS link -> sidecar B inbound (${POLICY_RULES}-rule policy, decision log to a file) -> h2c -> grpc-js app`,
      origin: `http://127.0.0.1:${a.outboundPort}`,
      path: grpc === undefined ? `http://b.internal${BENCH_PATH}` : GRPC_PATH,
      headers: { host: 'b.internal' },
      tls: false,
      handshakes: 'none',
      procs: [a.proc, b.proc],
      ...(grpc === undefined ? {} : { app: grpc.proc, grpc: { driver: 'node' as const, authority: 'b.internal', tunnel: 'b.internal:80' } }),
      ca,
      readyMs: { a: a.readyMs, b: b.readyMs },
      notes: ['CPU is both sidecars together (in brackets: A + B, over all rounds); RSS is the larger of the two'],
      rotations: () => ({ a: count(a.proc, 'identity.rotated'), b: count(b.proc, 'identity.rotated'), renewalFailures: count(a.proc, 'identity.renewal_failed') + count(b.proc, 'identity.renewal_failed') }),
      inspect: async () => ({ metricsB: await scrapeCounters(b.adminPort) }),
      stop: async () => { await Promise.all(started.reverse().map(async p => { await stop(p, 15_000) })) }
    }
  } catch (err) {
    await Promise.all(started.map(async p => { await stop(p) }))
    throw err
  }
}
