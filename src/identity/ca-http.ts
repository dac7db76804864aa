import { request, type IncomingHttpHeaders, type RequestOptions } from 'node:http'
import type { Socket } from 'node:net'
import type { Credentials } from './credentials.ts'
import { connectSvid } from './svid-connect.ts'

// One HTTPS request from a sidecar to the CA, on node:http over a connection connectSvid() made (mTLS,
// the CA required to present its SPIFFE ID). A sidecar talks to its CA a few times an hour (renewal,
// a quarantine long-poll every 20 s, a detector's report): a new connection per request is cheap
// there, and node:http keeps undici out of the sidecar, whose data path no longer uses it. undici
// held about 7.5 MB of the sidecar's anonymous memory (issue 21, bench/README.md).

export interface CaEndpoint {
  url: string
  credentials: Credentials
  /** SPIFFE ID the CA's serving certificate must carry. */
  caId: string
  /** Present our SVID as client certificate (false for a first request with only a token). */
  presentSvid?: boolean
  connectTimeoutMs?: number
}

export interface CaCall {
  method: 'GET' | 'POST'
  /** Path and query. */
  path: string
  headers?: Record<string, string>
  body?: string
  /** No byte from the CA for this long (after connecting) fails the call with ETIMEDOUT. */
  timeoutMs: number
  signal?: AbortSignal
}

export interface CaAnswer { status: number, headers: IncomingHttpHeaders, text: string }

/** Errors keep the system code (ECONNREFUSED, ETIMEDOUT...) or the GatehouseError connectSvid raised. */
export async function caRequest (ca: CaEndpoint, call: CaCall): Promise<CaAnswer> {
  const base = new URL(ca.url)
  const host = base.hostname.replace(/^\[|\]$/g, '')
  const port = Number(base.port === '' ? 443 : base.port)
  return await new Promise<CaAnswer>((resolve, reject) => {
    const req = request({
      host,
      port,
      method: call.method,
      path: call.path,
      headers: { host: base.host, ...call.headers, ...(call.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(call.body)) }) },
      ...(call.signal === undefined ? {} : { signal: call.signal }),
      // Returns nothing and answers through the callback once the CA's SVID is verified: not a byte is sent before.
      createConnection: (_o: unknown, cb: (err: Error | null, socket: Socket) => void) => {
        connectSvid({ host, port, credentials: ca.credentials, expectedId: ca.caId, presentSvid: ca.presentSvid !== false, timeoutMs: ca.connectTimeoutMs ?? 5000 },
          (err, socket) => { cb(err, socket as Socket) })
        return undefined
      }
    } as unknown as RequestOptions)
    req.setTimeout(call.timeoutMs, () => { req.destroy(Object.assign(new Error(`no answer from the CA within ${call.timeoutMs} ms`), { code: 'ETIMEDOUT' })) })
    req.on('error', reject)
    req.on('response', (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, text }) })
      res.on('error', reject)
    })
    req.end(call.body)
  })
}
