import { renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createServer as createTcpServer, connect as tcpConnect, type AddressInfo, type Socket } from 'node:net'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import pino from 'pino'
import { startSidecar, type Sidecar, type SidecarOptions } from '../../src/proxy/sidecar.ts'
import { captureLines, TEST_SIDECAR_LIMITS, type Pki, type SvidFiles, type Tap } from './mesh.ts'

// Outbound path on 127.0.0.1 with static SVIDs: a caller sidecar (its outbound listener is the test's
// HTTP_PROXY) and callee sidecars in front of real apps, each started with startSidecar directly, plus
// plain TCP servers that stand in for a non-mesh destination. Logs are captured as parsed JSON lines.

export const TD = 'example.org'
export const CALLER_ID = `spiffe://${TD}/ns/a/sa/caller`
export const CALLEE_ID = `spiffe://${TD}/ns/b/sa/callee`

export interface RouteSpec { host: string, address?: string, id?: string, serviceAccount?: string }

/** A routes file (the format of docs/architecture.md, "Outbound routes") for `routes`. */
export function routesYaml (routes: RouteSpec[]): string {
  if (routes.length === 0) return 'version: 1\nroutes: []\n'
  const items = routes.map(r => [
    `  - host: ${r.host}`,
    ...(r.address === undefined ? [] : [`    address: ${r.address}`]),
    ...(r.id === undefined ? [] : [`    id: ${r.id}`]),
    ...(r.serviceAccount === undefined ? [] : [`    serviceAccount: ${r.serviceAccount}`])
  ].join('\n'))
  return `version: 1\nroutes:\n${items.join('\n')}\n`
}


export interface Workload {
  name: string
  id: string
  svid: SvidFiles
  sidecar: Sidecar
  /** 127.0.0.1:<inbound port>, for a route's address. */
  inboundAddress: string
  /** The outbound (HTTP_PROXY) port; throws if the workload has no outbound listener. */
  outboundPort: number
  adminUrl: string
  routesFile: string | undefined
  policyFile: string
  logs: Array<Record<string, any>>
  /** Decision lines (msg "decision") written so far. */
  decisions: Array<Record<string, any>>
  /** Every decision-log line (genesis, admit, decision, checkpoint) written so far. */
  auditLines: Array<Record<string, any>>
}

export interface WorkloadOptions {
  /** File name prefix for the SVID, policy and routes files. */
  name: string
  /** Path (/ns/x/sa/y) or full SPIFFE ID the workload's SVID carries. */
  id: string
  /** The app behind the inbound listener (default: a port nothing listens on). */
  upstreamPort?: number
  /** SPIFFE IDs the inbound policy allows (any method, any path). */
  allow?: string[]
  /** The whole inbound policy file instead (`allow` is then ignored). */
  policy?: string
  /** The SVID's lifetime (default: the Pki's). */
  ttlMs?: number
  /** Starts an outbound listener with this routes file content. */
  routes?: string
  allowConnect?: string[]
  sidecar?: Partial<SidecarOptions>
}

/** One sidecar with a static SVID from `pki`, written to files in `dir`. */
export async function startWorkload (t: Tap, pki: Pki, dir: string, o: WorkloadOptions): Promise<Workload> {
  const svid = pki.issue(o.id, o.name, o.ttlMs)
  const id = o.id.startsWith('spiffe://') ? o.id : `spiffe://${pki.ca.trustDomain}${o.id}`
  const policyFile = join(dir, `${o.name}-policy.yaml`)
  const allow = o.allow ?? [`spiffe://${pki.ca.trustDomain}/ns/nobody/sa/nobody`]
  writeFileSync(policyFile, o.policy ?? `version: 1\nrules:\n  - name: allowed-callers\n    from: ${JSON.stringify(allow)}\n`)
  let routesFile: string | undefined
  if (o.routes !== undefined) {
    routesFile = join(dir, `${o.name}-routes.yaml`)
    writeFileSync(routesFile, o.routes)
  }
  const logs = captureLines()
  const decisions = captureLines()
  const sidecar = await startSidecar({
    inbound: { host: '127.0.0.1', port: 0 },
    upstream: { host: '127.0.0.1', port: o.upstreamPort ?? 9 },
    admin: { host: '127.0.0.1', port: 0 },
    ...(routesFile === undefined ? {} : { outbound: { host: '127.0.0.1', port: 0 }, routesFile }),
    ...(o.allowConnect === undefined ? {} : { allowConnect: o.allowConnect }),
    policyFile,
    trustBundleFile: pki.bundleFile,
    certFile: svid.cert,
    keyFile: svid.key,
    ...TEST_SIDECAR_LIMITS,
    logger: pino({ level: 'debug' }, logs.stream),
    decisionLog: decisions.stream,
    ...o.sidecar
  })
  t.teardown(async () => { await sidecar.stop(100) })
  return {
    name: o.name,
    id,
    svid,
    sidecar,
    inboundAddress: `127.0.0.1:${sidecar.inbound.port}`,
    get outboundPort (): number {
      if (sidecar.outbound === undefined) throw new Error(`${o.name} has no outbound listener`)
      return sidecar.outbound.port
    },
    adminUrl: `http://127.0.0.1:${sidecar.admin.port}`,
    routesFile,
    policyFile,
    logs: logs.lines,
    get decisions (): Array<Record<string, any>> { return decisions.lines.filter(l => l.msg === 'decision') },
    auditLines: decisions.lines
  }
}

export interface ProxyResponse { status: number, headers: IncomingHttpHeaders, body: Buffer, text: string }

export interface ProxyRequestOptions {
  method?: string
  headers?: Record<string, string>
  /** A string or Buffer is sent with content-length; a stream is piped (chunked). */
  body?: string | Buffer | Readable
  timeoutMs?: number
}

/**
 * What an app with HTTP_PROXY=http://127.0.0.1:<proxyPort> sends: the absolute-form target
 * (`GET http://b.internal/x HTTP/1.1`) and the Host of the URL, on a fresh connection.
 */
export async function viaProxy (proxyPort: number, url: string, o: ProxyRequestOptions = {}): Promise<ProxyResponse> {
  return await new Promise<ProxyResponse>((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: proxyPort,
      method: o.method ?? 'GET',
      path: url,
      // Node frames a DELETE/OPTIONS body only with an explicit content-length (it never chunks them).
      headers: { host: new URL(url).host, ...(typeof o.body === 'string' || Buffer.isBuffer(o.body) ? { 'content-length': String(Buffer.byteLength(o.body)) } : {}), ...o.headers },
      agent: false
    })
    const timer = setTimeout(() => { req.destroy(new Error(`no answer from the proxy within ${o.timeoutMs ?? 15_000} ms`)) }, o.timeoutMs ?? 15_000)
    req.on('error', (err) => { clearTimeout(timer); reject(err) })
    req.on('response', (res: IncomingMessage) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', (err) => { clearTimeout(timer); reject(err) })
      res.on('end', () => {
        clearTimeout(timer)
        const body = Buffer.concat(chunks)
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') })
      })
    })
    if (o.body === undefined) req.end()
    else if (typeof o.body === 'string' || Buffer.isBuffer(o.body)) req.end(o.body)
    else o.body.pipe(req)
  })
}

export const json = (r: ProxyResponse): Record<string, any> => JSON.parse(r.text) as Record<string, any>

export interface TcpProbe {
  port: number
  address: string
  /** Connections accepted so far. */
  connections: number
  /** The first chunk each connection sent, in order. */
  firstBytes: Buffer[]
}

/**
 * A plain TCP listener standing in for a destination: records the first bytes of each connection and
 * then drops it (it never answers, so it cannot be mistaken for a TLS server).
 */
export async function startTcpProbe (t: Tap): Promise<TcpProbe> {
  const sockets = new Set<Socket>()
  const probe: TcpProbe = { port: 0, address: '', connections: 0, firstBytes: [] }
  const server = createTcpServer((socket) => {
    probe.connections++
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
    socket.once('data', (chunk: Buffer) => { probe.firstBytes.push(chunk); socket.destroy() })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  probe.port = (server.address() as AddressInfo).port
  probe.address = `127.0.0.1:${probe.port}`
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise(resolve => server.close(resolve))
  })
  return probe
}

export interface EchoServer { port: number, address: string, connections: number }

/** A plain TCP echo server (a non-mesh destination CONNECT may tunnel to). */
export async function startEchoServer (t: Tap): Promise<EchoServer> {
  const sockets = new Set<Socket>()
  const echo: EchoServer = { port: 0, address: '', connections: 0 }
  const server = createTcpServer((socket) => {
    echo.connections++
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
    socket.pipe(socket)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  echo.port = (server.address() as AddressInfo).port
  echo.address = `127.0.0.1:${echo.port}`
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise(resolve => server.close(resolve))
  })
  return echo
}

/** A 127.0.0.1 port nothing listens on (bound, then released). */
export async function closedPort (): Promise<number> {
  const server = createTcpServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise(resolve => server.close(resolve))
  return port
}

/** Opens a plain TCP connection (to the outbound listener, for raw CONNECT probes). */
export async function openTcp (port: number): Promise<Socket> {
  return await new Promise<Socket>((resolve, reject) => {
    const s = tcpConnect({ host: '127.0.0.1', port }, () => { s.off('error', reject); resolve(s) })
    s.once('error', reject)
  })
}

/** Every byte `socket` delivers until it closes (or `ms` pass, then it is destroyed). */
export async function readAll (socket: Socket, ms = 5000): Promise<Buffer> {
  return await new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = []
    const done = (): void => { clearTimeout(timer); resolve(Buffer.concat(chunks)) }
    const timer = setTimeout(() => { socket.destroy() }, ms)
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => {})
    socket.once('close', done)
  })
}

/** An app handler that never answers (for timeouts); the app's teardown closes the connections. */
export const neverAnswer = (_req: IncomingMessage, _res: ServerResponse): void => {}
