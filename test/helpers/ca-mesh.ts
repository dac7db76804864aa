import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import pino from 'pino'
import { SignJWT, generateKeyPair, exportJWK } from 'jose'
import { ProxyAgent, request as undiciRequest } from 'undici'
import { initCa, loadCa, FILES, type CaMaterial } from '../../src/ca/ca-directory.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { mintJoinToken, JoinTokenVerifier, UsedTokenLog, CA_AUDIENCE } from '../../src/ca/join-token.ts'
import { K8sTokenVerifier, jwksFromFile } from '../../src/ca/k8s-token.ts'
import { Attestor } from '../../src/ca/attest.ts'
import { RateLimiter } from '../../src/ca/rate-limit.ts'
import { startCaServer, type RunningCaServer, type CaServerOptions } from '../../src/ca/ca-server.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { generateKey } from '../../src/x509/keys.ts'
import type { SidecarOptions } from '../../src/proxy/sidecar.ts'
import { captureLines, policyAllowing, startWorkload, type App, type AppHandler, type CaWorkload, type Tap, type Workload } from './mesh.ts'
import { sleep } from './wait.ts'
import { tempDir } from './files.ts'

// A mesh whose identities all come from a running CA, as in production: a real `ca serve`
// (startCaServer over HTTPS on 127.0.0.1, short leaf TTL, live reload of its directory, a generous
// rate limit) that can be stopped and restarted on the same port, and join tokens. Its sidecars are
// startWorkload's (mesh.ts) with `ca`: CA mode (`ca: { url, tokenFile }`). The CA's log is captured
// in memory as parsed JSON.
//
// startCaMesh gives the usual pair: A (caller) whose routes map b.internal to B's inbound, and B
// (callee) in front of its own real HTTP app, whose policy allows A. The test itself plays A's app:
// it calls A's outbound listener as an HTTP proxy with plain http://b.internal/... URLs.

export const TRUST_DOMAIN = 'example.org'
export const A_ID = 'spiffe://example.org/ns/a/sa/caller'
export const B_ID = 'spiffe://example.org/ns/b/sa/server'
export const B_HOST = 'b.internal'

export type LogLine = Record<string, any>

// ---------------------------------------------------------------------------------------------
// The CA

export interface TestCaOptions {
  leafTtlMs: number
  /** How often `ca serve` polls its directory (root rotation). */
  reloadIntervalMs?: number
  k8s?: K8sTokenVerifier
  /** `ca serve --max-renewal-chain-age`. */
  maxRenewalChainAgeMs?: number
  /** The CA's clock for renewal chains (start and age); certificate validity stays on real time. */
  clock?: () => Date
  /** `ca serve --auto-quarantine/--quorum/--never-quarantine/--auto-quarantine-ttl`. */
  autoQuarantine?: CaServerOptions['autoQuarantine']
}

export interface TestCa {
  dir: string
  trustDomain: string
  /** Fixed for the CA's whole life: a restart listens on the same port. */
  port: number
  url: string
  leafTtlMs: number
  /** The CA's operational log across restarts, parsed. */
  logs: LogLine[]
  readonly running: boolean
  /** Kills the API: every open connection is cut, the port closed. */
  stop: () => Promise<void>
  /** Starts the API again on the same port, re-reading the CA directory (like a restarted `ca serve`). */
  restart: () => Promise<void>
  /** A single-use join token for `id` (`gatehouse ca token`). */
  joinToken: (id: string, ttlMs?: number) => Promise<string>
  /** Offline issuance from the current CA material (`gatehouse ca issue`), key kept in memory. */
  issue: (id: string, ttlMs: number) => { chainPem: string, keyPem: string, notAfter: Date, serial: string }
  /** The CA material as it is on disk now. */
  material: () => CaMaterial
}

export async function startTestCa (t: Tap, opts: TestCaOptions): Promise<TestCa> {
  const dir = join(tempDir(t, 'gh-ca-'), 'ca')
  initCa({ dir, trustDomain: TRUST_DOMAIN })
  const capture = captureLines()
  const logger = pino({ level: 'debug' }, capture.stream)
  const limiter = new RateLimiter({ burst: 100_000, perMinute: 100_000 })
  let running: RunningCaServer | undefined
  let port = 0
  const start = async (): Promise<void> => {
    const ca = loadCa(dir)
    running = await startCaServer({
      ca,
      issuer: new Issuer(ca, { defaultTtlMs: opts.leafTtlMs }),
      attestor: new Attestor({
        join: new JoinTokenVerifier({ tokenKey: ca.tokenKey, trustDomain: ca.trustDomain, used: new UsedTokenLog(join(dir, FILES.usedTokens)) }),
        ...(opts.k8s === undefined ? {} : { k8s: opts.k8s })
      }),
      limiter,
      logger,
      listen: { host: '127.0.0.1', port },
      ...(opts.maxRenewalChainAgeMs === undefined ? {} : { maxRenewalChainAgeMs: opts.maxRenewalChainAgeMs }),
      ...(opts.clock === undefined ? {} : { clock: opts.clock }),
      ...(opts.autoQuarantine === undefined ? {} : { autoQuarantine: opts.autoQuarantine }),
      reload: {
        intervalMs: opts.reloadIntervalMs ?? 200,
        load: () => { const m = loadCa(dir); return { ca: m, issuer: new Issuer(m, { defaultTtlMs: opts.leafTtlMs }) } }
      }
    })
    port = running.port
  }
  const stop = async (): Promise<void> => {
    const r = running
    running = undefined
    if (r === undefined) return
    r.server.closeAllConnections()
    await r.close()
  }
  await start()
  t.teardown(stop)
  return {
    dir,
    trustDomain: TRUST_DOMAIN,
    port,
    url: `https://127.0.0.1:${port}`,
    leafTtlMs: opts.leafTtlMs,
    logs: capture.lines,
    get running () { return running !== undefined },
    stop,
    restart: async () => { if (running === undefined) await start() },
    joinToken: async (id, ttlMs = 600_000) => {
      const ca = loadCa(dir)
      return await mintJoinToken({ tokenKey: ca.tokenKey, trustDomain: ca.trustDomain, id: SpiffeId.parse(id), ttlMs })
    },
    issue: (id, ttlMs) => {
      const key = generateKey('ec-p256')
      const svid = new Issuer(loadCa(dir)).issue({ id: SpiffeId.parse(id), publicKey: key.publicKey, ttlMs })
      return { chainPem: svid.chainPem, keyPem: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), notAfter: svid.notAfter, serial: svid.serial }
    },
    material: () => loadCa(dir)
  }
}

// ---------------------------------------------------------------------------------------------
// The A -> B pair

export const OK_APP = (_req: IncomingMessage, res: ServerResponse): void => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 })
  res.end('ok')
}

export const DENY_ALL_POLICY = 'version: 1\nrules: []\n'

export const routesTo = (b: Workload): string => `version: 1
routes:
  - host: ${B_HOST}
    address: ${b.inboundAddress}
    id: ${B_ID}
`

export interface CallResult { status: number, body: string, headers: Record<string, string | string[] | undefined> }

export interface CaMesh {
  ca: TestCa
  a: CaWorkload
  b: CaWorkload & { app: App }
  /** The test as A's app: GET http://b.internal<path> through A's outbound listener (HTTP_PROXY). */
  call: (path: string, opts?: { method?: string, headers?: Record<string, string> }) => Promise<CallResult>
}

export interface CaMeshOptions {
  leafTtlMs: number
  caReloadIntervalMs?: number
  /** B's policy; default: allow A. */
  bPolicy?: string
  bundle?: 'live' | 'copy'
  bApp?: AppHandler
  sidecar?: Partial<SidecarOptions>
}

export async function startCaMesh (t: Tap, o: CaMeshOptions): Promise<CaMesh> {
  const ca = await startTestCa(t, { leafTtlMs: o.leafTtlMs, ...(o.caReloadIntervalMs === undefined ? {} : { reloadIntervalMs: o.caReloadIntervalMs }) })
  const common = { ca, bundle: o.bundle, sidecar: o.sidecar }
  const b = await startWorkload(t, { ...common, name: 'b', id: B_ID, policy: o.bPolicy ?? policyAllowing(A_ID), app: o.bApp ?? OK_APP })
  const a = await startWorkload(t, { ...common, name: 'a', id: A_ID, policy: DENY_ALL_POLICY, routes: routesTo(b) })
  // proxyTunnel: false = what an app with HTTP_PROXY does for http:// URLs (absolute-form, no CONNECT).
  const dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${a.outboundPort}`, proxyTunnel: false })
  // tap runs teardowns last-registered first: this client, then A, B, the CA, the temp dirs.
  t.teardown(async () => { await dispatcher.destroy() })
  return {
    ca,
    a,
    b,
    call: async (path, opts = {}) => {
      const res = await undiciRequest(`http://${B_HOST}${path}`, {
        method: (opts.method ?? 'GET') as 'GET',
        headers: opts.headers ?? {},
        dispatcher,
        headersTimeout: 15_000,
        bodyTimeout: 15_000
      })
      return { status: res.statusCode, body: await res.body.text(), headers: res.headers }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Constant load

export interface LoadResult {
  ok: number
  failed: number
  /** The first few failures, for the diagnostic. */
  failures: string[]
  /** Failures by kind (status or error code). */
  byKind: Record<string, number>
}

export interface Load {
  result: LoadResult
  /** Stops the loops and resolves when every request in flight has finished. */
  stop: () => Promise<LoadResult>
}

/** `concurrency` loops each calling mesh.call back to back until stop(). A request fails unless it gets 200 "ok". */
export function startLoad (mesh: CaMesh, concurrency: number, path = '/load'): Load {
  const result: LoadResult = { ok: 0, failed: 0, failures: [], byKind: {} }
  let running = true
  const fail = (kind: string, detail: string): void => {
    result.failed++
    result.byKind[kind] = (result.byKind[kind] ?? 0) + 1
    if (result.failures.length < 20) result.failures.push(`${new Date().toISOString()} ${detail}`)
  }
  const loop = async (n: number): Promise<void> => {
    let i = 0
    while (running) {
      try {
        const r = await mesh.call(`${path}/${n}/${i++}`)
        if (r.status === 200 && r.body === 'ok') result.ok++
        else fail(String(r.status), `${r.status} ${r.body.slice(0, 300)}`)
      } catch (err) {
        const e = err as Error & { code?: string }
        fail(e.code ?? e.name, `${e.code ?? e.name}: ${e.message}`)
        await sleep(10)
      }
    }
  }
  const loops = Array.from({ length: concurrency }, async (_, n) => { await loop(n) })
  return {
    result,
    stop: async () => { running = false; await Promise.all(loops); return result }
  }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes projected service-account tokens (re-usable, unlike join tokens)

export const K8S_ISSUER = 'https://kubernetes.default.svc.cluster.local'

export interface SaTokens {
  verifier: K8sTokenVerifier
  /** A pod-bound token for system:serviceaccount:<namespace>:<serviceAccount>, audience gatehouse-ca. */
  mint: (namespace: string, serviceAccount: string, pod: string) => Promise<string>
}

/** A cluster's service-account signer, its JWKS in a file, and the CA-side verifier for it. */
export async function saTokens (t: Tap): Promise<SaTokens> {
  const { privateKey, publicKey } = await generateKeyPair('ES256')
  const kid = `sa-${randomUUID().slice(0, 8)}`
  const file = join(tempDir(t, 'gh-jwks-'), 'jwks.json')
  writeFileSync(file, JSON.stringify({ keys: [{ ...await exportJWK(publicKey), kid, alg: 'ES256', use: 'sig' }] }))
  return {
    verifier: new K8sTokenVerifier({ jwks: jwksFromFile(file), issuer: K8S_ISSUER, trustDomain: TRUST_DOMAIN }),
    mint: async (namespace, serviceAccount, pod) => {
      const now = Math.floor(Date.now() / 1000)
      return await new SignJWT({
        aud: [CA_AUDIENCE],
        'kubernetes.io': { namespace, pod: { name: pod, uid: randomUUID() }, serviceaccount: { name: serviceAccount, uid: randomUUID() } }
      })
        .setProtectedHeader({ alg: 'ES256', kid })
        .setIssuer(K8S_ISSUER)
        .setSubject(`system:serviceaccount:${namespace}:${serviceAccount}`)
        .setIssuedAt(now)
        .setExpirationTime(now + 3600)
        .sign(privateKey)
    }
  }
}
