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
  const pools = new Map<string, Pool>()
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
  // Routes changed, or our SVID rotated: let the current pools finish their requests (close() is
  // graceful) and open fresh ones on demand. After a rotation this retires every connection made
  // with the old certificate at half-life, long before the peer would close it at expiry.
  const retirePools = (): void => {
    for (const pool of pools.values()) void pool.close()
    pools.clear()
  }
  o.routes.onChange(retirePools)
  let serial = o.credentials.current?.leaf.serialHex
  o.credentials.on('change', () => {
    const now = o.credentials.current?.leaf.serialHex
    if (now !== serial) { serial = now; retirePools() }
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
    poolFor(route).request({ path: `${url.pathname}${url.search}`, method: req.method as 'GET', headers, body: hasBody ? req : null }).then((up) => {
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
      await Promise.allSettled([...pools.values()].map(async p => { await p.close() }))
    }
  }
}
