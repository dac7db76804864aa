import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { Agent, request } from 'undici'
import { createLogger } from '../../src/log.ts'
import { initCa, loadCa, FILES, type CaMaterial } from '../../src/ca/ca-directory.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { JoinTokenVerifier, UsedTokenLog } from '../../src/ca/join-token.ts'
import type { K8sTokenVerifier } from '../../src/ca/k8s-token.ts'
import { Attestor } from '../../src/ca/attest.ts'
import { RateLimiter } from '../../src/ca/rate-limit.ts'
import { startCaServer, type RunningCaServer } from '../../src/ca/ca-server.ts'
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
    ...(opts.clock === undefined ? {} : { clock: opts.clock })
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
