import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { randomUUID, createPublicKey, type KeyObject } from 'node:crypto'
import type { Server as HttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { Agent, request } from 'undici'
import { SignJWT, generateKeyPair, exportJWK, type JWK, type CryptoKey } from 'jose'
import { createLogger } from '../../src/log.ts'
import { initCa, loadCa, FILES, type CaMaterial } from '../../src/ca/ca-directory.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { JoinTokenVerifier, UsedTokenLog, mintJoinToken, CA_AUDIENCE } from '../../src/ca/join-token.ts'
import { K8sTokenVerifier, type JwksSource } from '../../src/ca/k8s-token.ts'
import { Attestor } from '../../src/ca/attest.ts'
import { RateLimiter } from '../../src/ca/rate-limit.ts'
import { startCaServer, type RunningCaServer, type CaServerOptions } from '../../src/ca/ca-server.ts'
import { createCsr } from '../../src/x509/csr.ts'
import { generateKey, type KeyType } from '../../src/x509/keys.ts'
import { parseCertificate, pemToDers, type Certificate } from '../../src/x509/certificate.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { tempDir, type Teardown } from './files.ts'

// A real CA API for tests: a CA initialised in a fresh temp dir, served by startCaServer on
// 127.0.0.1:<random port> over real HTTPS, wired like `gatehouse ca serve` (join tokens with the
// on-disk used-token log, optional service-account verifier, rate limiter), with the operational
// log captured in memory so a test can read back the JSON lines.

/** The part of a tap Test the fixtures need (keeps this helper independent of tap's types). */


/** `gatehouse ca init` in a fresh temp dir (removed at teardown). */
export function tempCa (t: Teardown, trustDomain = 'example.org'): { dir: string, ca: CaMaterial } {
  const dir = join(tempDir(t, 'gatehouse-ca-'), 'ca')
  initCa({ dir, trustDomain })
  return { dir, ca: loadCa(dir) }
}

export interface CaFixtureOptions {
  trustDomain?: string
  /** Serve an existing CA dir (e.g. to restart on it) instead of initialising a new one; not removed by this fixture. */
  dir?: string
  k8s?: K8sTokenVerifier
  limiter?: RateLimiter
  leafTtlMs?: number
  /** `ca serve --max-renewal-chain-age`. */
  maxRenewalChainAgeMs?: number
  /** The CA's clock for renewal chains (start and age); certificate validity stays on real time. */
  clock?: () => Date
  /** `ca serve --dns-san`, and the bundle publisher (`--publish-trust-bundle`, `--webhook-ca-bundle`). */
  dnsSans?: CaServerOptions['dnsSans']
  publisher?: CaServerOptions['publisher']
  /** Re-read the CA directory this often (root rotation); off when unset. */
  reloadIntervalMs?: number
}

export interface CaFixture {
  dir: string
  ca: CaMaterial
  url: string
  port: number
  running: RunningCaServer
  /** An undici Agent that trusts the CA bundle and presents no client certificate. */
  agent: Agent
  /** Every log line written so far, parsed. */
  logs: () => Array<Record<string, unknown>>
  /** Every log line written so far, exactly as written. */
  rawLogs: () => string[]
  /** Closes the server and agent (idempotent; also done at teardown). */
  close: () => Promise<void>
}

export async function startCaFixture (t: Teardown, opts: CaFixtureOptions = {}): Promise<CaFixture> {
  const dir = opts.dir ?? tempCa(t, opts.trustDomain).dir
  const ca = loadCa(dir)
  const lines: string[] = []
  const logger = createLogger('gatehouse-ca', { level: 'debug', destination: { write: (s: string) => { lines.push(s) } } })
  const running = await startCaServer({
    ca,
    issuer: new Issuer(ca, opts.leafTtlMs === undefined ? {} : { defaultTtlMs: opts.leafTtlMs }),
    attestor: new Attestor({
      join: new JoinTokenVerifier({ tokenKey: ca.tokenKey, trustDomain: ca.trustDomain, used: new UsedTokenLog(join(dir, FILES.usedTokens)) }),
      ...(opts.k8s === undefined ? {} : { k8s: opts.k8s })
    }),
    limiter: opts.limiter ?? new RateLimiter({ burst: 1000, perMinute: 1000 }),
    logger,
    listen: { host: '127.0.0.1', port: 0 },
    ...(opts.maxRenewalChainAgeMs === undefined ? {} : { maxRenewalChainAgeMs: opts.maxRenewalChainAgeMs }),
    ...(opts.clock === undefined ? {} : { clock: opts.clock }),
    ...(opts.dnsSans === undefined ? {} : { dnsSans: opts.dnsSans }),
    ...(opts.publisher === undefined ? {} : { publisher: opts.publisher }),
    ...(opts.reloadIntervalMs === undefined ? {} : { reload: { intervalMs: opts.reloadIntervalMs, load: () => { const m = loadCa(dir); return { ca: m, issuer: new Issuer(m, opts.leafTtlMs === undefined ? {} : { defaultTtlMs: opts.leafTtlMs }) } } } })
  })
  const agent = new Agent({ connect: { ca: ca.bundlePem } })
  let closed: Promise<void> | undefined
  const close = async (): Promise<void> => {
    closed ??= (async () => {
      await agent.close()
      await running.close()
    })()
    await closed
  }
  t.teardown(close)
  return {
    dir,
    ca,
    url: `https://127.0.0.1:${running.port}`,
    port: running.port,
    running,
    agent,
    logs: () => lines.map(l => JSON.parse(l) as Record<string, unknown>),
    rawLogs: () => [...lines],
    close
  }
}

export interface ApiResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  json: any
}

/** One HTTP request against the fixture; the body is read fully, JSON parsed when it parses. */
export async function call (f: { url: string, agent: Agent }, path: string, opts: {
  method?: 'GET' | 'POST' | 'PUT' | 'HEAD'
  headers?: Record<string, string>
  body?: string | Buffer | Readable
  dispatcher?: Agent
} = {}): Promise<ApiResponse> {
  const res = await request(`${f.url}${path}`, {
    method: opts.method ?? 'GET',
    headers: opts.headers ?? {},
    ...(opts.body === undefined ? {} : { body: opts.body }),
    dispatcher: opts.dispatcher ?? f.agent
  })
  const text = await res.body.text()
  let json: unknown
  try { json = JSON.parse(text) } catch { json = undefined }
  return { status: res.statusCode, headers: res.headers, text, json }
}

/** POST /v1/svid the usual way: bearer token (if any), JSON body {"csr": ...}. */
export async function postSvid (f: { url: string, agent: Agent }, opts: { token?: string, csr?: unknown, body?: string | Buffer | Readable, contentType?: string, dispatcher?: Agent }): Promise<ApiResponse> {
  const headers: Record<string, string> = { 'content-type': opts.contentType ?? 'application/json' }
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`
  return await call(f, '/v1/svid', {
    method: 'POST',
    headers,
    body: opts.body ?? JSON.stringify({ csr: opts.csr }),
    ...(opts.dispatcher === undefined ? {} : { dispatcher: opts.dispatcher })
  })
}

// ---------------------------------------------------------------------------------------------
// What the CA API tests (test/ca-server-*.test.ts) share: the identities they use, keys and CSRs,
// join tokens, refusals, mTLS agents, and Kubernetes service-account tokens.

export const TD = 'example.org'
export const VM_ID = SpiffeId.parse(`spiffe://${TD}/vm/billing`)
export const K8S_ISS = 'https://kubernetes.default.svc.cluster.local'
export const SA_ID = `spiffe://${TD}/ns/payments/sa/api`

/** The assertion refused() needs (the subtest's t; kept structural so any tap Test fits). */
export interface Asserts {
  equal: (found: unknown, wanted: unknown, message: string) => boolean
  match: (found: unknown, pattern: unknown, message: string) => boolean
}

export const keyPem = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }).toString()
export const spki = (k: KeyObject): Buffer => (k.type === 'private' ? createPublicKey(k) : k).export({ type: 'spki', format: 'der' })

export function keyAndCsr (type: KeyType = 'ec-p256'): { privateKey: KeyObject, publicKey: KeyObject, csr: string } {
  const key = generateKey(type)
  return { ...key, csr: createCsr(key.privateKey) }
}

export async function joinToken (ca: CaMaterial, opts: { id?: SpiffeId, ttlMs?: number, now?: Date } = {}): Promise<string> {
  return await mintJoinToken({ tokenKey: ca.tokenKey, trustDomain: ca.trustDomain, id: opts.id ?? VM_ID, ttlMs: opts.ttlMs ?? 600_000, ...(opts.now === undefined ? {} : { now: opts.now }) })
}

export function leafOf (chainPem: string): Certificate {
  const [leaf] = pemToDers(chainPem)
  if (leaf === undefined) throw new Error('no certificate in chain')
  return parseCertificate(leaf)
}

export function openssl (cwd: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] })
}

/** A refusal: the status, the stable code and (so a case cannot pass for the wrong reason) the message. */
export function refused (t: Asserts, r: ApiResponse, status: number, code: string, what: string, message?: RegExp): void {
  t.equal(r.status, status, `${what}: HTTP ${status}`)
  t.equal(r.json?.error, code, `${what}: ${code}`)
  if (message !== undefined) t.match(r.json?.message, message, `${what}: ${String(message)}`)
}

export function b64url (v: unknown): string {
  return Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')
}

/** An undici Agent presenting `cert` (chain PEM) and `key` as its TLS client certificate, closed at teardown. */
export function mtlsAgent (t: Teardown, ca: CaMaterial, cert: string, key: KeyObject): Agent {
  const agent = new Agent({ connect: { ca: ca.bundlePem, cert, key: keyPem(key) } })
  t.teardown(async () => { await agent.close() })
  return agent
}

export async function listen (t: Teardown, server: HttpServer): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => { resolve() }))
  })
  return (server.address() as AddressInfo).port
}

// ---------------------------------------------------------------------------------------------
// Kubernetes projected service-account tokens, shaped as the kube-apiserver issues them

export interface SaSigner { privateKey: CryptoKey, publicKey: CryptoKey, kid: string, jwk: JWK }

export async function saSigner (kid = `sa-${randomUUID().slice(0, 8)}`): Promise<SaSigner> {
  const { privateKey, publicKey } = await generateKeyPair('RS256')
  const jwk = { ...await exportJWK(publicKey), kid, alg: 'RS256', use: 'sig' }
  return { privateKey, publicKey, kid, jwk }
}

export const POD = { name: 'api-7d4b9c6f5-xk2lp', uid: randomUUID() }

export function saClaims (over: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000)
  return {
    aud: [CA_AUDIENCE],
    exp: now + 3600,
    iat: now,
    nbf: now,
    iss: K8S_ISS,
    jti: randomUUID(),
    'kubernetes.io': {
      namespace: 'payments',
      node: { name: 'node-1', uid: randomUUID() },
      pod: { ...POD },
      serviceaccount: { name: 'api', uid: randomUUID() }
    },
    sub: 'system:serviceaccount:payments:api',
    ...over
  }
}

export async function saToken (signer: SaSigner, opts: { claims?: Record<string, unknown>, header?: Record<string, unknown>, key?: CryptoKey | KeyObject | Uint8Array } = {}): Promise<string> {
  return await new SignJWT(opts.claims ?? saClaims())
    .setProtectedHeader({ alg: 'RS256', kid: signer.kid, ...opts.header } as { alg: string })
    .sign(opts.key ?? signer.privateKey)
}

/** The same signing key under a kid the JWKS does not list (so only the kid is wrong). */
export function withUnknownKid (s: SaSigner): SaSigner {
  return { ...s, kid: 'not-in-the-jwks' }
}

export function writeJwks (dir: string, ...signers: SaSigner[]): string {
  const file = join(dir, 'jwks.json')
  writeFileSync(file, JSON.stringify({ keys: signers.map(s => s.jwk) }))
  return file
}

export function k8sVerifier (jwks: JwksSource): K8sTokenVerifier {
  return new K8sTokenVerifier({ jwks, issuer: K8S_ISS, trustDomain: TD })
}
