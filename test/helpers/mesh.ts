import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PassThrough } from 'node:stream'
import { connect as h2connect, type ClientHttp2Session, type OutgoingHttpHeaders as H2OutgoingHeaders, type IncomingHttpHeaders as H2IncomingHeaders } from 'node:http2'
import { Agent, request as undiciRequest } from 'undici'
import pino from 'pino'
import { initCa, loadCa, type CaMaterial } from '../../src/ca/ca-directory.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { generateKey } from '../../src/x509/keys.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { startSidecar, type Sidecar, type SidecarOptions } from '../../src/proxy/sidecar.ts'
import { tempDir } from './files.ts'

// A whole inbound setup on 127.0.0.1 with random ports, all made by the project's own CA:
// a CA dir, the sidecar's cert/key/bundle files, a policy file, a real HTTP app, the sidecar,
// and clients that present SVIDs. Logs and decision lines are captured in memory as parsed JSON.

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

/** A real HTTP app on 127.0.0.1 that records what reached it. Default handler echoes JSON. */
export async function startApp (t: Tap, handler?: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<App> {
  const seen: SeenRequest[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      if (handler !== undefined) { handler(req, res, body); return }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }))
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) })
  return { server, port: (server.address() as AddressInfo).port, seen }
}

/** JSON lines written to a stream, parsed, for asserting on log output. */
export function captureLines (): { stream: PassThrough, lines: Array<Record<string, any>> } {
  const stream = new PassThrough()
  const lines: Array<Record<string, any>> = []
  let buf = ''
  stream.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8')
    let i: number
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, any>)
    }
  })
  return { stream, lines }
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

export const DEFAULT_POLICY = `version: 1
rules:
  - name: client-all
    from: ["spiffe://example.org/ns/client/sa/caller"]
`

export interface Mesh {
  dir: string
  pki: Pki
  app: App
  sidecar: Sidecar
  server: SvidFiles
  client: SvidFiles
  policyFile: string
  url: string
  /** Decision lines as parsed JSON; rawDecisions is every line of the log as written (genesis and
   * checkpoints included: the hash chain runs through all of them). */
  decisions: Array<Record<string, any>>
  rawDecisions: string[]
  logs: Array<Record<string, any>>
  /** An undici Agent presenting `svid` (default: the client SVID) and trusting the bundle. */
  agent: (svid?: SvidFiles) => Agent
  /** An HTTP/2 connection (ALPN h2) to the sidecar presenting `svid` (default: the client SVID); closed at teardown. */
  h2: (svid?: SvidFiles) => Promise<ClientHttp2Session>
  /** GET/POST through the sidecar as the client. */
  request: (path: string, opts?: { method?: string, headers?: Record<string, string>, body?: string, svid?: SvidFiles }) => Promise<{ status: number, headers: Record<string, any>, body: string }>
}

export interface MeshOptions {
  policy?: string
  appHandler?: (req: IncomingMessage, res: ServerResponse, body: string) => void
  sidecar?: Partial<SidecarOptions>
}

export async function startMesh (t: Tap, opts: MeshOptions = {}): Promise<Mesh> {
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const app = await startApp(t, opts.appHandler)
  const server = pki.issue('/ns/server/sa/payments', 'server')
  const client = pki.issue('/ns/client/sa/caller', 'client')
  const policyFile = join(dir, 'policy.yaml')
  writeFileSync(policyFile, opts.policy ?? DEFAULT_POLICY)
  const decisionCapture = new PassThrough()
  const rawDecisions: string[] = []
  const decisions: Array<Record<string, any>> = []
  let buf = ''
  decisionCapture.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8')
    let i: number
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      rawDecisions.push(line)
      const rec = JSON.parse(line) as Record<string, any>
      if (rec.msg === 'decision') decisions.push(rec)
    }
  })
  const logCapture = captureLines()
  const sidecar = await startSidecar({
    inbound: { host: '127.0.0.1', port: 0 },
    upstream: { host: '127.0.0.1', port: app.port },
    admin: { host: '127.0.0.1', port: 0 },
    policyFile,
    trustBundleFile: pki.bundleFile,
    certFile: server.cert,
    keyFile: server.key,
    ...TEST_SIDECAR_LIMITS,
    logger: pino({ level: 'debug' }, logCapture.stream),
    decisionLog: decisionCapture,
    ...opts.sidecar
  })
  const agents: Agent[] = []
  t.teardown(async () => {
    await Promise.allSettled(agents.map(async a => { await a.destroy() }))
    await sidecar.stop(100)
  })
  const url = `https://127.0.0.1:${sidecar.inbound.port}`
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
  return {
    h2,
    dir,
    pki,
    app,
    sidecar,
    server,
    client,
    policyFile,
    url,
    decisions,
    rawDecisions,
    logs: logCapture.lines,
    agent,
    request: async (path, o = {}) => {
      const res = await undiciRequest(`${url}${path}`, {
        method: (o.method ?? 'GET') as 'GET',
        headers: o.headers ?? {},
        ...(o.body === undefined ? {} : { body: o.body }),
        dispatcher: o.svid === undefined ? defaultAgent : agent(o.svid)
      })
      return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
    }
  }
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

/** Waits until `check` is true (polling), failing after `ms`. */
