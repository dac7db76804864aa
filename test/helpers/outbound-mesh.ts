import { createServer as createTcpServer, connect as tcpConnect, type AddressInfo, type Socket } from 'node:net'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { Tap } from './mesh.ts'

// Outbound path on 127.0.0.1 with static SVIDs: a caller workload (startWorkload in mesh.ts with
// `routes`: its outbound listener is the test's HTTP_PROXY) and callee workloads in front of real
// apps. Here: their routes files, the app's side of HTTP_PROXY, and plain TCP servers that stand in
// for a non-mesh destination.

export const TD = 'example.org'
export const CALLER_ID = `spiffe://${TD}/ns/a/sa/caller`
export const CALLEE_ID = `spiffe://${TD}/ns/b/sa/callee`

export interface RouteSpec { host: string, address?: string, id?: string, serviceAccount?: string, listen?: string }

/** A routes file (the format of docs/architecture.md, "Outbound routes") for `routes`. */
export function routesYaml (routes: RouteSpec[]): string {
  if (routes.length === 0) return 'version: 1\nroutes: []\n'
  const items = routes.map(r => [
    `  - host: ${r.host}`,
    ...(r.address === undefined ? [] : [`    address: ${r.address}`]),
    ...(r.id === undefined ? [] : [`    id: ${r.id}`]),
    ...(r.serviceAccount === undefined ? [] : [`    serviceAccount: ${r.serviceAccount}`]),
    ...(r.listen === undefined ? [] : [`    listen: ${r.listen}`])
  ].join('\n'))
  return `version: 1\nroutes:\n${items.join('\n')}\n`
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
