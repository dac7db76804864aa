import { createServer, type Server, type IncomingMessage, type ServerResponse, type IncomingHttpHeaders } from 'node:http'
import { connect as netConnect, type AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { Pool, errors as undiciErrors } from 'undici'
import type { Logger } from '../log.ts'
import type { Credentials } from './credentials.ts'
import type { RouteTable, Route } from './routes.ts'
import { connectSvid, PeerIdentityError } from './svid-connect.ts'
import { endToEndHeaders } from './forward.ts'

// The outbound listener: the app calls other services through HTTP_PROXY=http://127.0.0.1:15001
// with plain http:// URLs. Each destination host must be in the route table; the call leaves the
// pod only as mTLS to the destination's sidecar, which must present the SPIFFE ID of the route.
// Unknown destinations are refused, and CONNECT (an opaque tunnel) only to listed host:ports.

export interface OutboundOptions {
  listen: { host: string, port: number }
  credentials: Credentials
  routes: RouteTable
  logger: Logger
  connectTimeoutMs: number
  responseTimeoutMs: number
  /** host:port pairs CONNECT may tunnel to (plain TCP, outside the mesh); empty = CONNECT refused. */
  allowConnect: string[]
  /**
   * After our SVID rotates, how long connections made with the old one keep taking a (falling) share
   * of requests (default 5 s; never more than half of the old SVID's remaining life).
   */
  rotationHandoverMs?: number
  onRequest?: (outcome: string) => void
}

export interface Outbound { server: Server, port: number, close: () => Promise<void> }

function reply (res: ServerResponse, status: number, code: string, error: string, detail: string): void {
  const body = JSON.stringify({ error, code, detail })
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

export async function startOutbound (o: OutboundOptions): Promise<Outbound> {
  const { logger } = o
  /** Pools (by destination) whose connections present the current SVID. */
  let pools = new Map<string, Pool>()
  /** After a rotation: the pools of the previous SVID, handing their traffic over (see rotate). */
  let previous: { pools: Map<string, Pool>, since: number, ms: number, timer: NodeJS.Timeout } | undefined
  const poolKey = (r: Route): string => `${r.address.host}:${r.address.port}|${r.id}`
  const poolFor = (r: Route): Pool => {
    const key = poolKey(r)
    let pool = pools.get(key)
    if (pool === undefined) {
      pool = new Pool(`https://${r.address.host.includes(':') ? `[${r.address.host}]` : r.address.host}:${r.address.port}`, {
        connections: 128,
        keepAliveTimeout: 30_000,
        headersTimeout: o.responseTimeoutMs,
        bodyTimeout: 0,
        // Every new connection presents our current SVID and checks the peer's: a rotation applies
        // to the next connection, and an existing one finishes with the certificate it started with.
        connect: (_opts, cb) => {
          connectSvid({ host: r.address.host, port: r.address.port, credentials: o.credentials, expectedId: r.id, timeoutMs: o.connectTimeoutMs },
            (err, socket) => { if (err !== null || socket === undefined) cb(err ?? new Error('no socket'), null); else cb(null, socket) })
        }
      })
      pools.set(key, pool)
    }
    return pool
  }
  /** The pool a request goes to: during a hand-over, the old one with a share falling from 1 to 0. */
  const pick = (r: Route): Pool => {
    if (previous !== undefined) {
      const old = previous.pools.get(poolKey(r))
      if (old !== undefined && Math.random() * previous.ms > Date.now() - previous.since) return old
    }
    return poolFor(r)
  }
  // close() is graceful: requests in flight on those connections finish.
  const closeAll = (m: Map<string, Pool>): void => { for (const pool of m.values()) void pool.close() }
  const retirePrevious = (): void => {
    if (previous === undefined) return
    clearTimeout(previous.timer)
    closeAll(previous.pools)
    previous = undefined
  }
  // Routes changed: every pool goes at once (a destination may now expect another SPIFFE ID).
  o.routes.onChange(() => { retirePrevious(); closeAll(pools); pools = new Map() })
  // Our SVID rotated: new connections present the new one, and the old pools hand their traffic over
  // gradually. Dropping them all at once made every waiting request open its own mTLS connection at
  // the same moment (a p99 stall of ~700 ms in bench:rotation); the old certificate is valid for
  // half its life still, so a few seconds of overlap costs nothing.
  // The hand-over ends well before the old SVID expires: a peer refuses requests on a connection
  // whose client certificate has expired.
  const rotate = (oldNotAfter: Date | undefined): void => {
    retirePrevious()
    const ms = Math.min(o.rotationHandoverMs ?? 5000, ((oldNotAfter?.getTime() ?? 0) - Date.now()) / 2)
    if (pools.size === 0 || ms <= 0) { closeAll(pools); pools = new Map(); return }
    const timer = setTimeout(retirePrevious, ms)
    timer.unref()
    previous = { pools, since: Date.now(), ms, timer }
    pools = new Map()
  }
  let own = o.credentials.current
  o.credentials.on('change', () => {
    const now = o.credentials.current
    if (now?.leaf.serialHex !== own?.leaf.serialHex) { const old = own; own = now; rotate(old?.notAfter) }
  })

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    let url: URL
    try {
      // HTTP_PROXY clients send absolute-form; a client that talks to us directly sends origin-form + Host.
      url = new URL(req.url?.startsWith('/') === true ? `http://${req.headers.host ?? ''}${req.url}` : req.url ?? '')
    } catch {
      reply(res, 400, 'GH_OUTBOUND_BAD_TARGET', 'bad_request', 'request target is not a URL'); o.onRequest?.('bad-target'); return
    }
    if (url.protocol !== 'http:') {
      reply(res, 400, 'GH_OUTBOUND_BAD_TARGET', 'bad_request', `${url.protocol} URLs cannot be proxied; call http:// and the sidecar adds mTLS`); o.onRequest?.('bad-target'); return
    }
    const port = url.port === '' ? 80 : Number(url.port)
    const host = url.hostname.replace(/^\[|\]$/g, '')
    const route = o.routes.lookup(host, port)
    if (route === undefined) {
      logger.warn({ event: 'outbound.refused', code: 'GH_OUTBOUND_UNKNOWN_DESTINATION', host, port }, 'outbound call to an unknown destination refused')
      reply(res, 403, 'GH_OUTBOUND_UNKNOWN_DESTINATION', 'unknown_destination', `${host}:${port} is not in the routes file`); o.onRequest?.('unknown-destination'); return
    }
    const headers = endToEndHeaders(req.headers, ['expect']) as Record<string, string | string[]>
    headers.host = url.host
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
    pick(route).request({ path: `${url.pathname}${url.search}`, method: req.method as 'GET', headers, body: hasBody ? req : null }).then((up) => {
      res.writeHead(up.statusCode, endToEndHeaders(up.headers as IncomingHttpHeaders))
      up.body.pipe(res)
      up.body.on('error', () => { res.destroy() })
      o.onRequest?.('forwarded')
    }, (err: Error & { code?: string }) => {
      if (err instanceof PeerIdentityError) {
        logger.error({ event: 'outbound.peer_refused', code: err.code, reason: err.reason, host, route: route.id, detail: err.message }, 'destination did not present the expected SPIFFE ID')
        reply(res, 502, 'GH_PEER_IDENTITY', 'upstream_identity_mismatch', err.message); o.onRequest?.('identity-mismatch'); return
      }
      const timeout = err instanceof undiciErrors.HeadersTimeoutError
      logger.warn({ event: 'outbound.failed', code: err.code, host, route: route.id, detail: err.message }, 'outbound call failed')
      if (res.headersSent) { res.destroy(); return }
      reply(res, timeout ? 504 : 502, timeout ? 'GH_UPSTREAM_TIMEOUT' : 'GH_UPSTREAM_UNAVAILABLE', timeout ? 'upstream_timeout' : 'upstream_unavailable', err.message)
      o.onRequest?.(timeout ? 'timeout' : 'unavailable')
    })
  }

  const server = createServer({ headersTimeout: 10_000, requestTimeout: 0, keepAliveTimeout: 60_000 }, handle)
  server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // A raw socket is ours once 'connect' fires: without an error listener a client reset would crash the process.
    socket.on('error', () => { socket.destroy() })
    const target = (req.url ?? '').toLowerCase()
    const sep = target.lastIndexOf(':')
    // undici/fetch clients tunnel even http:// through CONNECT. To a routed destination the tunnel is
    // read by this same HTTP server (origin-form + Host), so it is still routed, mTLS'd and checked.
    if (sep > 0 && o.routes.lookup(target.slice(0, sep).replace(/^\[|\]$/g, ''), Number(target.slice(sep + 1))) !== undefined) {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length > 0) socket.unshift(head)
      server.emit('connection', socket)
      return
    }
    if (!o.allowConnect.includes(target)) {
      logger.warn({ event: 'outbound.refused', code: 'GH_OUTBOUND_CONNECT_REFUSED', target }, 'CONNECT refused')
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"error":"connect_refused","code":"GH_OUTBOUND_CONNECT_REFUSED"}')
      return
    }
    const [h, p] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))]
    let established = false
    const upstream = netConnect({ host: h, port: p, timeout: o.connectTimeoutMs }, () => {
      established = true
      upstream.setTimeout(0)
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length > 0) upstream.write(head)
      upstream.pipe(socket).pipe(upstream)
    })
    const close = (): void => { upstream.destroy(); socket.destroy() }
    upstream.on('timeout', () => { upstream.destroy(new Error('connect timeout')) })
    // Before the 200 the client still speaks HTTP and gets a 502; after it, the stream is opaque and is just closed.
    upstream.on('error', () => { if (established) close(); else socket.end('HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\n\r\n') })
    upstream.on('close', () => { if (established) socket.end() })
    socket.on('error', close)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(o.listen.port, o.listen.host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  logger.info({ event: 'outbound.listening', host: o.listen.host, port }, 'outbound listener ready')
  return {
    server,
    port,
    close: async () => {
      await new Promise<void>(resolve => { server.close(() => { resolve() }); server.closeIdleConnections() })
      if (previous !== undefined) clearTimeout(previous.timer)
      await Promise.allSettled([...pools.values(), ...(previous?.pools.values() ?? [])].map(async p => { await p.close() }))
    }
  }
}
