import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PassThrough } from 'node:stream'
import { connect as h2connect, type ClientHttp2Session, type OutgoingHttpHeaders as H2OutgoingHeaders, type IncomingHttpHeaders as H2IncomingHeaders } from 'node:http2'
import { Agent, request as undiciRequest } from 'undici'
import pino from 'pino'
import { initCa, loadCa, FILES, type CaMaterial } from '../../src/ca/ca-directory.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { generateKey } from '../../src/x509/keys.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { startSidecar, type Sidecar, type SidecarOptions } from '../../src/proxy/sidecar.ts'
import { adminGet, scrapeMetrics, type AdminResponse } from './inbound-probe.ts'
import type { TestCa } from './ca-mesh.ts'
import { tempDir } from './files.ts'

// Test sidecars on 127.0.0.1 with random ports. startWorkload is the one builder: a sidecar whose
// identity is either static SVID files from a Pki (the project's own CA, issued now) or a running
// test CA (ca-mesh.ts), with its policy and routes files, optionally a real HTTP app behind it, and
// its logs and decision lines captured in memory. startMesh is the usual inbound setup on top of it:
// one server sidecar in front of an echo app, and clients that present SVIDs.

export interface Tap { teardown: (fn: () => void | Promise<void>) => void }

export interface SvidFiles { cert: string, key: string, chainPem: string, keyPem: string }

export class Pki {
  readonly dir: string
  readonly ca: CaMaterial
  private readonly issuer: Issuer
  constructor (dir: string, trustDomain = 'example.org') {
    this.dir = dir
    initCa({ dir: join(dir, `ca-${trustDomain}`), trustDomain })
    this.ca = loadCa(join(dir, `ca-${trustDomain}`))
    this.issuer = new Issuer(this.ca)
  }

  get bundleFile (): string { return join(this.ca.dir, 'bundle.pem') }

  /** Issues an SVID for `id` (a path like /ns/a/sa/b or a full SPIFFE ID) and writes it to files. */
  issue (id: string, name: string, ttlMs?: number): SvidFiles {
    const spiffeId = SpiffeId.parse(id.startsWith('spiffe://') ? id : `spiffe://${this.ca.trustDomain}${id}`)
    const key = generateKey('ec-p256')
    const svid = this.issuer.issue({ id: spiffeId, publicKey: key.publicKey, ...(ttlMs === undefined ? {} : { ttlMs }) })
    const keyPem = key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    const cert = join(this.dir, `${name}.pem`)
    const keyFile = join(this.dir, `${name}-key.pem`)
    writeFileSync(cert, svid.chainPem)
    writeFileSync(keyFile, keyPem, { mode: 0o600 })
    return { cert, key: keyFile, chainPem: svid.chainPem, keyPem }
  }
}


export interface SeenRequest { method: string, url: string, headers: IncomingMessage['headers'], body: string }

export interface App { server: Server, port: number, seen: SeenRequest[] }

export type AppHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void

/** startApp's default handler: 200 with what arrived, as JSON. */
export const ECHO_APP: AppHandler = (req, res, body) => {
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }))
}

/** A real HTTP app on 127.0.0.1 that records what reached it. */
export async function startApp (t: Tap, handler: AppHandler = ECHO_APP): Promise<App> {
  const seen: SeenRequest[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      handler(req, res, body)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) })
  return { server, port: (server.address() as AddressInfo).port, seen }
}

/**
 * JSON lines written to a stream: parsed, and as written (`raw`, without the newline) for checks
 * on the exact bytes, such as the decision log's hash chain. `onLine` sees each parsed line as it arrives.
 */
export function captureLines (onLine?: (line: Record<string, any>) => void): { stream: PassThrough, lines: Array<Record<string, any>>, raw: string[] } {
  const stream = new PassThrough()
  const lines: Array<Record<string, any>> = []
  const raw: string[] = []
  let buf = ''
  stream.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8')
    let i: number
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      if (line.trim() === '') continue
      const parsed = JSON.parse(line) as Record<string, any>
      raw.push(line)
      lines.push(parsed)
      onLine?.(parsed)
    }
  })
  return { stream, lines, raw }
}

/** Polling, timeouts and limits every test sidecar uses: short enough to keep tests fast. */
export const TEST_SIDECAR_LIMITS = {
  reloadIntervalMs: 100,
  tlsMinVersion: 'TLSv1.3',
  handshakeTimeoutMs: 5000,
  headersTimeoutMs: 5000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 5000,
  maxHeaderSize: 16384,
  maxConnections: 1000,
  upstreamTimeoutMs: 5000,
  upstreamConnectTimeoutMs: 1000
} as const satisfies Partial<SidecarOptions>

/**
 * For a sidecar in CA mode, longer than TEST_SIDECAR_LIMITS (and a longer drain at stop, CA_MODE_DRAIN_MS):
 * CA renewals and rotations under load run for many seconds.
 */
const CA_MODE_LIMITS = {
  idleTimeoutMs: 30_000,
  upstreamTimeoutMs: 10_000,
  upstreamConnectTimeoutMs: 2000
} as const satisfies Partial<SidecarOptions>
const CA_MODE_DRAIN_MS = 200
const DRAIN_MS = 100

export const DEFAULT_POLICY = `version: 1
rules:
  - name: client-all
    from: ["spiffe://example.org/ns/client/sa/caller"]
`

// ---------------------------------------------------------------------------------------------
// One workload: a sidecar, its files and what it logs

export interface WorkloadCommonOptions {
  /** Prefix of its temp dir and files (and of the SVID files, with a Pki). */
  name: string
  /** Path (/ns/x/sa/y) or full SPIFFE ID the workload's SVID carries. */
  id: string
  /** An app behind the inbound listener, started with startApp: `app` of the workload. */
  app?: AppHandler
  /** Or the port of an app the test runs itself (default: 9, where nothing listens). */
  upstreamPort?: number
  /** SPIFFE IDs the inbound policy allows (any method, any path); default: nobody. */
  allow?: string[]
  /** The whole inbound policy file instead (`allow` is then ignored). */
  policy?: string
  /** Starts an outbound listener with this routes file content (without: no outbound listener). */
  routes?: string
  allowConnect?: string[]
  /**
   * 'live' (default): --trust-bundle is the CA's own bundle.pem. 'copy': a copy made now, which does
   * not follow the CA, so new roots reach the sidecar only through the CA's responses.
   */
  bundle?: 'live' | 'copy'
  /** Applied last: overrides any option above. */
  sidecar?: Partial<SidecarOptions>
}

/** Static SVID files, issued by `pki` now. */
export interface PkiIdentity {
  pki: Pki
  /** The SVID's lifetime (default: the Pki's). */
  ttlMs?: number
  ca?: never
}

/** CA mode (`ca: { url, tokenFile }`): the sidecar gets its SVID from `ca`, as in production. */
export interface CaIdentity {
  ca: TestCa
  /** Token file content; default: a fresh join token for `id`. */
  token?: string
  expectedId?: string
  /**
   * Called with the log and token file before the sidecar has an SVID (startWorkload resolves only
   * once it has one), for tests that watch a sidecar that is still trying.
   */
  pending?: (s: { logs: Array<Record<string, any>>, tokenFile: string }) => void
  pki?: never
}

export type WorkloadOptions = WorkloadCommonOptions & (PkiIdentity | CaIdentity)

export interface Workload {
  name: string
  /** The full SPIFFE ID. */
  id: string
  /** Its own temp dir: policy, routes and token files (static SVID files are in the Pki's dir). */
  dir: string
  sidecar: Sidecar
  /** The app startWorkload started (option `app`). */
  app?: App
  /** The static SVID files (with a Pki). */
  svid?: SvidFiles
  /** The token file (in CA mode). */
  tokenFile?: string
  policyFile: string
  routesFile: string | undefined
  bundleFile: string
  logs: Array<Record<string, any>>
  /** Decision lines (msg "decision") written so far; an array of its own, which a test may empty to count afresh. */
  decisions: Array<Record<string, any>>
  /** Every decision-log line (genesis, admit, decision, checkpoint) written so far, parsed. */
  auditLines: Array<Record<string, any>>
  /** The same lines exactly as written: the hash chain runs through these bytes. */
  rawAuditLines: string[]
  /** Operational log lines with this `event`. */
  events: (event: string) => Array<Record<string, any>>
  /** 127.0.0.1:<inbound port>, for a route's address. */
  inboundAddress: string
  /** The outbound (HTTP_PROXY) port; throws if the workload has no outbound listener. */
  readonly outboundPort: number
  adminUrl: string
  readyz: () => Promise<AdminResponse>
  metrics: () => Promise<string>
  /** Stops the sidecar once (later calls wait for that stop); also registered at teardown. */
  stop: () => Promise<void>
}

export type PkiWorkload = Workload & { svid: SvidFiles }
export type CaWorkload = Workload & { tokenFile: string }

/** What startWorkload returns for options `O`: SVID files or a token file, and `app` if it started one. */
export type WorkloadOf<O> = (O extends { ca: TestCa } ? CaWorkload : PkiWorkload) & (O extends { app: AppHandler } ? { app: App } : unknown)

/** A policy allowing `ids` any method on any path. */
export const policyAllowing = (...ids: string[]): string => `version: 1
rules:
  - name: allowed-callers
    from: [${ids.map(id => JSON.stringify(id)).join(', ')}]
`

/**
 * Starts one test sidecar; resolves once it serves (in CA mode: once it has its first SVID, which
 * startSidecar waits for).
 */
export async function startWorkload<O extends WorkloadOptions> (t: Tap, options: O): Promise<WorkloadOf<O>> {
  const o: WorkloadOptions = options
  const dir = tempDir(t, `gh-${o.name}-`)
  const trustDomain = o.ca === undefined ? o.pki.ca.trustDomain : o.ca.trustDomain
  const id = o.id.startsWith('spiffe://') ? o.id : `spiffe://${trustDomain}${o.id}`
  const app = o.app === undefined ? undefined : await startApp(t, o.app)
  const policyFile = join(dir, `${o.name}-policy.yaml`)
  writeFileSync(policyFile, o.policy ?? policyAllowing(...(o.allow ?? [`spiffe://${trustDomain}/ns/nobody/sa/nobody`])))
  let routesFile: string | undefined
  if (o.routes !== undefined) {
    routesFile = join(dir, `${o.name}-routes.yaml`)
    writeFileSync(routesFile, o.routes)
  }
  let bundleFile = o.ca === undefined ? o.pki.bundleFile : join(o.ca.dir, FILES.bundle)
  if (o.bundle === 'copy') {
    mkdirSync(join(dir, 'bundle'))
    copyFileSync(bundleFile, join(dir, 'bundle', 'bundle.pem'))
    bundleFile = join(dir, 'bundle', 'bundle.pem')
  }
  const logs = captureLines()
  const decisions: Array<Record<string, any>> = []
  const audit = captureLines(line => { if (line.msg === 'decision') decisions.push(line) })
  let svid: SvidFiles | undefined
  let tokenFile: string | undefined
  let identity: Partial<SidecarOptions>
  if (o.ca === undefined) {
    svid = o.pki.issue(id, o.name, o.ttlMs)
    identity = { certFile: svid.cert, keyFile: svid.key }
  } else {
    tokenFile = join(dir, `${o.name}-token`)
    writeFileSync(tokenFile, o.token ?? await o.ca.joinToken(id), { mode: 0o600 })
    identity = { ca: { url: o.ca.url, tokenFile, ...(o.expectedId === undefined ? {} : { expectedId: o.expectedId }) }, ...CA_MODE_LIMITS }
    o.pending?.({ logs: logs.lines, tokenFile })
  }
  const sidecar = await startSidecar({
    inbound: { host: '127.0.0.1', port: 0 },
    upstream: { host: '127.0.0.1', port: app?.port ?? o.upstreamPort ?? 9 },
    admin: { host: '127.0.0.1', port: 0 },
    ...(routesFile === undefined ? {} : { outbound: { host: '127.0.0.1', port: 0 }, routesFile }),
    ...(o.allowConnect === undefined ? {} : { allowConnect: o.allowConnect }),
    policyFile,
    trustBundleFile: bundleFile,
    ...TEST_SIDECAR_LIMITS,
    ...identity,
    logger: pino({ level: 'debug' }, logs.stream),
    decisionLog: audit.stream,
    ...o.sidecar
  })
  // Through sidecar.stop as it is when first called, so that stopOnce (audit-log.ts) makes it a no-op.
  let stopped: Promise<void> | undefined
  const stop = async (): Promise<void> => { stopped ??= sidecar.stop(o.ca === undefined ? DRAIN_MS : CA_MODE_DRAIN_MS); await stopped }
  t.teardown(stop)
  const workload: Workload = {
    name: o.name,
    id,
    dir,
    sidecar,
    app,
    svid,
    tokenFile,
    policyFile,
    routesFile,
    bundleFile,
    logs: logs.lines,
    decisions,
    auditLines: audit.lines,
    rawAuditLines: audit.raw,
    events: (event) => logs.lines.filter(l => l.event === event),
    inboundAddress: `127.0.0.1:${sidecar.inbound.port}`,
    get outboundPort () {
      if (sidecar.outbound === undefined) throw new Error(`${o.name} has no outbound listener`)
      return sidecar.outbound.port
    },
    adminUrl: `http://127.0.0.1:${sidecar.admin.port}`,
    readyz: async () => await adminGet(workload, '/readyz'),
    metrics: async () => await scrapeMetrics(workload),
    stop
  }
  return workload as WorkloadOf<O>
}

// ---------------------------------------------------------------------------------------------
// The inbound mesh: a server workload and its clients

export interface Mesh extends PkiWorkload {
  pki: Pki
  app: App
  /** The server sidecar's SVID (its `svid`). */
  server: SvidFiles
  client: SvidFiles
  url: string
  /** An undici Agent presenting `svid` (default: the client SVID) and trusting the bundle. */
  agent: (svid?: SvidFiles) => Agent
  /** An HTTP/2 connection (ALPN h2) to the sidecar presenting `svid` (default: the client SVID); closed at teardown. */
  h2: (svid?: SvidFiles) => Promise<ClientHttp2Session>
  /** GET/POST through the sidecar as the client. */
  request: (path: string, opts?: { method?: string, headers?: Record<string, string>, body?: string, svid?: SvidFiles }) => Promise<{ status: number, headers: Record<string, any>, body: string }>
}

export interface MeshOptions {
  policy?: string
  appHandler?: AppHandler
  sidecar?: Partial<SidecarOptions>
}

export async function startMesh (t: Tap, opts: MeshOptions = {}): Promise<Mesh> {
  const pki = new Pki(tempDir(t))
  const client = pki.issue('/ns/client/sa/caller', 'client')
  const w = await startWorkload(t, {
    name: 'server',
    id: '/ns/server/sa/payments',
    pki,
    app: opts.appHandler ?? ECHO_APP,
    policy: opts.policy ?? DEFAULT_POLICY,
    sidecar: opts.sidecar
  })
  const agents: Agent[] = []
  t.teardown(async () => { await Promise.allSettled(agents.map(async a => { await a.destroy() })) })
  const url = `https://127.0.0.1:${w.sidecar.inbound.port}`
  const agent = (svid: SvidFiles = client): Agent => {
    // Sidecars authenticate each other by SPIFFE ID, not DNS name: the server SVID has no DNS SAN.
    const a = new Agent({ connect: { ca: pki.ca.bundlePem, cert: svid.chainPem, key: svid.keyPem, checkServerIdentity: () => undefined } })
    agents.push(a)
    return a
  }
  const defaultAgent = agent()
  const sessions: ClientHttp2Session[] = []
  t.teardown(() => { for (const s of sessions) s.destroy() })
  const h2 = async (svid: SvidFiles = client): Promise<ClientHttp2Session> => {
    const session = h2connect(url, { ca: pki.ca.bundlePem, cert: svid.chainPem, key: svid.keyPem, checkServerIdentity: () => undefined })
    sessions.push(session)
    session.on('error', () => {})
    await new Promise<void>((resolve, reject) => { session.once('connect', () => { resolve() }); session.once('error', reject) })
    return session
  }
  const request: Mesh['request'] = async (path, o = {}) => {
    const res = await undiciRequest(`${url}${path}`, {
      method: (o.method ?? 'GET') as 'GET',
      headers: o.headers ?? {},
      ...(o.body === undefined ? {} : { body: o.body }),
      dispatcher: o.svid === undefined ? defaultAgent : agent(o.svid)
    })
    return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
  }
  // Onto the workload itself: a copy would lose its outboundPort getter.
  return Object.assign(w, { pki, server: w.svid, client, url, agent, h2, request })
}

export interface H2Response { status: number, headers: H2IncomingHeaders, body: string, trailers: H2IncomingHeaders, rstCode: number }

/** One request on an HTTP/2 session: the answer, its trailers, and how the stream ended (rstCode 0: cleanly). */
export async function h2Request (session: ClientHttp2Session, headers: H2OutgoingHeaders, body?: string | Buffer): Promise<H2Response> {
  return await new Promise<H2Response>((resolve) => {
    const req = session.request(headers, { endStream: body === undefined })
    const chunks: Buffer[] = []
    let status = 0
    let resHeaders: H2IncomingHeaders = {}
    let trailers: H2IncomingHeaders = {}
    req.on('response', (h) => { resHeaders = h; status = Number(h[':status']) })
    req.on('trailers', (h) => { trailers = h })
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('error', () => {})
    req.on('close', () => { resolve({ status, headers: resHeaders, body: Buffer.concat(chunks).toString('utf8'), trailers, rstCode: req.rstCode ?? 0 }) })
    if (body !== undefined) req.end(body)
  })
}

