// The gRPC call every gRPC target is sent, and the HTTP/2 client that sends it (bench/grpc-load-worker.ts
// and the probe): a unary call to gatehouse.test.Echo/Unary (test/helpers/echo.proto) whose body is one
// length-prefixed protobuf message, encoded once here; the same bytes are the -d file of h2load.
import { connect as h2connect, type ClientHttp2Session, type SecureClientSessionOptions } from 'node:http2'
import { request as httpRequest } from 'node:http'
import type { SecureContext } from 'node:tls'
import type { Call } from '../load.ts'

/** h2load, from Debian's nghttp2-client (bench/h2load-worker.ts). */
export const H2LOAD = '/usr/bin/h2load'

/** The method called: a gRPC path is /<package>.<Service>/<Method>. */
export const GRPC_PATH = '/gatehouse.test.Echo/Unary'
/** The policy rule that allows it (every gRPC call is a POST). */
export const GRPC_MATCH = { methods: ['POST'], paths: ['/gatehouse.test.Echo/*'] }
/** What a gRPC client sends with every call besides the pseudo-headers. */
export const GRPC_HEADERS = { 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'gatehouse-bench' }

const varint = (n: number): number[] => { const out: number[] = []; while (n > 0x7f) { out.push((n & 0x7f) | 0x80); n >>>= 7 } out.push(n); return out }

/** EchoMessage { text, n } in protobuf (field 1 string, field 2 int32), framed as gRPC: flag 0, 4-byte length, message. */
export function grpcFrame (text: string, n: number): Buffer {
  const t = Buffer.from(text)
  const msg = Buffer.from([0x0a, ...varint(t.length), ...t, 0x10, ...varint(n)])
  const head = Buffer.alloc(5)
  head.writeUInt32BE(msg.length, 1)
  return Buffer.concat([head, msg])
}

/** The request body (and, since the app echoes it, the expected response body): 40 bytes. */
export const GRPC_BODY = grpcFrame('gatehouse bench unary call', 12345)

/**
 * How the client reaches a target: `origin` https:// is HTTP/2 over mTLS (ALPN h2, the client
 * certificate in `secureContext`); http:// is h2c with prior knowledge, or, with `tunnel`, h2c
 * inside an HTTP/1.1 CONNECT tunnel to `tunnel` (what grpc-js does with grpc_proxy).
 */
export interface H2Route { origin: string, authority: string, tunnel?: string }

export async function openH2 (r: H2Route, secureContext?: SecureContext): Promise<ClientHttp2Session> {
  const url = new URL(r.origin)
  let session: ClientHttp2Session
  if (url.protocol === 'https:') {
    if (secureContext === undefined) throw new Error(`${r.origin}: a TLS target needs the client certificate`)
    // SVIDs name a SPIFFE ID, not a host name: the chain is checked against the CA, the name is not.
    const tls: SecureClientSessionOptions = { secureContext, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }
    session = h2connect(r.origin, tls)
  } else if (r.tunnel !== undefined) {
    const socket = await new Promise<import('node:net').Socket>((resolve, reject) => {
      const req = httpRequest({ host: url.hostname, port: url.port, method: 'CONNECT', path: r.tunnel, headers: { host: r.tunnel } })
      req.once('connect', (res, sock, head) => {
        if (res.statusCode !== 200) { sock.destroy(); reject(new Error(`CONNECT ${r.tunnel!} answered ${res.statusCode}`)); return }
        if (head.length > 0) sock.unshift(head)
        resolve(sock)
      })
      req.once('error', reject)
      req.end()
    })
    session = h2connect(`http://${r.authority}`, { createConnection: () => socket })
  } else {
    session = h2connect(r.origin)
  }
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => { session.off('error', reject); resolve() })
    session.once('error', reject)
  })
  // Errors after connect reach the streams; the session's own must not crash the process.
  session.on('error', () => {})
  return session
}

/**
 * One unary call per invocation on `sessions` (round robin): null if it ended with HTTP 200 and
 * grpc-status 0 (in the trailers, or in a trailers-only answer), or what went wrong. `onBody`
 * receives the response body of each call (the probe checks it; the load generator drops it).
 */
export function grpcCall (sessions: ClientHttp2Session[], authority: string, scheme: 'http' | 'https', onBody?: (body: Buffer) => void): Call {
  let k = 0
  return async () => await new Promise<string | null>((resolve) => {
    const session = sessions[k++ % sessions.length]!
    const s = session.request({ ':method': 'POST', ':path': GRPC_PATH, ':scheme': scheme, ':authority': authority, ...GRPC_HEADERS })
    let status = 0
    let grpcStatus: string | undefined
    let failure: string | undefined
    const chunks: Buffer[] = []
    s.on('response', (h) => { status = Number(h[':status']); if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']) })
    s.on('trailers', (t) => { if (t['grpc-status'] !== undefined) grpcStatus = String(t['grpc-status']) })
    if (onBody === undefined) s.resume()
    else s.on('data', (c: Buffer) => chunks.push(c))
    s.on('error', (err: NodeJS.ErrnoException) => { failure = err.code ?? err.message })
    s.on('close', () => {
      if (onBody !== undefined) onBody(Buffer.concat(chunks))
      resolve(failure ?? (status !== 200 ? `HTTP ${status}` : grpcStatus === '0' ? null : `grpc-status ${grpcStatus ?? 'missing'}`))
    })
    s.end(GRPC_BODY)
  })
}
