import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls'
import { request as httpRequest } from 'node:http'
import type { Mesh, SvidFiles, Workload } from './mesh.ts'

// Probes for the inbound listener and the admin port, on real sockets: a TLS client whose every
// option a test controls (bad certificates, TLS versions, resumption), a plain HTTP GET for the
// admin endpoints, and a reader for the Prometheus text format.

export const REQUEST = 'GET /probe HTTP/1.1\r\nhost: gatehouse.test\r\nconnection: close\r\n\r\n'

export interface TlsAttempt {
  /** The client side finished its handshake ('secureConnect'); in TLS 1.3 the server may still refuse after this. */
  secured: boolean
  /** Every byte the server sent back after the handshake, as latin1 text. */
  response: string
  /** The first error the client saw, if any. */
  error: string | undefined
  protocol: string | null
  reused: boolean
  /** The serial number (upper-case hex, as Node reports it) of the certificate the server presented. */
  serverSerial: string | undefined
  /** The last TLS session the server handed out (ticket or session ID), for a resumption attempt. */
  session: Buffer | undefined
}

/**
 * TLS options presenting `svid` (default: the client SVID; null: no certificate) and trusting the
 * mesh's bundle; the server is identified by SPIFFE ID, not DNS name.
 */
export function clientTls (mesh: Mesh, svid: SvidFiles | null = mesh.client): ConnectionOptions {
  return {
    host: '127.0.0.1',
    port: mesh.sidecar.inbound.port,
    ca: mesh.pki.ca.bundlePem,
    ...(svid === null ? {} : { cert: svid.chainPem, key: svid.keyPem }),
    checkServerIdentity: () => undefined
  }
}

/**
 * Connects with `opts`, writes `request` once the client handshake is done, and reads until the
 * server closes (or `maxMs` passes; then the socket is destroyed). Never rejects.
 */
export async function tlsAttempt (opts: ConnectionOptions, request = REQUEST, maxMs = 5000): Promise<TlsAttempt> {
  return await new Promise<TlsAttempt>((resolve) => {
    const result: TlsAttempt = { secured: false, response: '', error: undefined, protocol: null, reused: false, serverSerial: undefined, session: undefined }
    const socket: TLSSocket = tlsConnect(opts)
    const timer = setTimeout(() => { result.error ??= 'client gave up waiting'; socket.destroy() }, maxMs)
    socket.on('secureConnect', () => {
      result.secured = true
      result.protocol = socket.getProtocol()
      result.reused = socket.isSessionReused()
      result.serverSerial = socket.getPeerCertificate().serialNumber
      socket.write(request)
    })
    socket.on('session', (session: Buffer) => { result.session = session })
    socket.on('data', (chunk: Buffer) => { result.response += chunk.toString('latin1') })
    socket.on('error', (err) => { result.error ??= err.message })
    socket.on('close', () => { clearTimeout(timer); resolve(result) })
  })
}

/** Opens an authenticated TLS socket (resolves on 'secureConnect'). The caller destroys it. */
export async function openTls (opts: ConnectionOptions): Promise<TLSSocket> {
  return await new Promise<TLSSocket>((resolve, reject) => {
    const socket = tlsConnect(opts)
    socket.once('secureConnect', () => { socket.off('error', reject); resolve(socket) })
    socket.once('error', reject)
  })
}

/** The status code of the first HTTP/1.1 status line in `text`, or undefined. */
export function statusOf (text: string): number | undefined {
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(text)
  return m === null ? undefined : Number(m[1])
}

export interface AdminResponse { status: number, contentType: string | undefined, body: string }

/** A plain GET (no keep-alive) to the sidecar's admin listener. */
export async function adminGet (w: Pick<Workload, 'sidecar'>, path: string): Promise<AdminResponse> {
  return await new Promise<AdminResponse>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: w.sidecar.admin.port, path, method: 'GET', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], body }) })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

export async function scrapeMetrics (w: Pick<Workload, 'sidecar'>): Promise<string> {
  const res = await adminGet(w, '/metrics')
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`)
  return res.body
}

function parseLabels (text: string): Record<string, string> {
  const labels: Record<string, string> = {}
  for (const m of text.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => c === 'n' ? '\n' : c)
  return labels
}

/** The sum of the samples of `name` whose labels include `labels` (0 when there is none). */
export function metricValue (text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = parseLabels(m[2] ?? '')
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3])
  }
  return sum
}

export interface RawResponse { status: number, headers: Record<string, string>, body: string }

/**
 * Reads HTTP/1.1 responses framed by content-length (no chunked bodies: use an app that sets
 * content-length) off a socket, one per call, for keep-alive exchanges over a raw connection.
 */
export function responseReader (socket: TLSSocket): () => Promise<RawResponse> {
  let buf = ''
  let ended = false
  let waiter: (() => void) | undefined
  socket.on('data', (chunk: Buffer) => { buf += chunk.toString('latin1'); waiter?.() })
  socket.on('close', () => { ended = true; waiter?.() })
  const parse = (): RawResponse | undefined => {
    const end = buf.indexOf('\r\n\r\n')
    if (end === -1) return undefined
    const [statusLine = '', ...lines] = buf.slice(0, end).split('\r\n')
    const headers: Record<string, string> = {}
    for (const l of lines) {
      const i = l.indexOf(':')
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
    }
    const length = Number(headers['content-length'] ?? 0)
    if (buf.length < end + 4 + length) return undefined
    const body = buf.slice(end + 4, end + 4 + length)
    buf = buf.slice(end + 4 + length)
    return { status: statusOf(`${statusLine} `) ?? 0, headers, body }
  }
  return async () => await new Promise<RawResponse>((resolve, reject) => {
    const check = (): void => {
      const r = parse()
      if (r !== undefined) { waiter = undefined; resolve(r) } else if (ended) { waiter = undefined; reject(new Error(`connection closed before a complete response (have ${JSON.stringify(buf.slice(0, 200))})`)) }
    }
    waiter = check
    check()
  })
}

/** Resolves with the milliseconds from now until `socket` closes (or rejects after `maxMs`). */
export async function msUntilClosed (socket: { destroyed: boolean, once: (e: 'close', f: () => void) => unknown, destroy: () => void }, maxMs: number): Promise<number> {
  const start = performance.now()
  if (socket.destroyed) return 0
  return await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`socket still open after ${maxMs} ms`)) }, maxMs)
    socket.once('close', () => { clearTimeout(timer); resolve(performance.now() - start) })
  })
}
