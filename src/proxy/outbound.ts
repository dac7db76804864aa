import type { IncomingHttpHeaders } from 'node:http'
import { createServer as createH2cServer, constants as h2, type Http2Session, type ServerHttp2Stream, type IncomingHttpHeaders as H2Headers } from 'node:http2'
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from 'node:net'
import { PassThrough, type Readable } from 'node:stream'
import type { Logger } from '../log.ts'
import type { Credentials } from '../identity/credentials.ts'
import { BadRequestError, HeadersTooLargeError, OutboundBadTargetError, OutboundConnectRefusedError, OutboundUnknownDestinationError, PeerIdentityError, QuarantinedError, UpstreamTimeoutError, UpstreamUnavailableError, type GatehouseError } from '../errors.ts'
import { refusal } from '../error-body.ts'
import type { RouteTable, Route } from './routes.ts'
import { endToEndHeaders, isGrpc } from './headers.ts'
import { H2Sink, type ForwardOutcome, type ForwardRequest, type ResponseSink } from './exchange.ts'
import { forwardH2 } from './forward-h2.ts'
import { MeshLinks } from './mesh-link.ts'
import { MeshPools } from './mesh-pool.ts'
import { forwardH1 as forwardH1Pool } from './forward-h1.ts'
import { refuseH1, refuseH2, refuseRaw, type Refusal } from './refusal.ts'
import { startRouteListeners, type RouteListeners } from './route-listeners.ts'
import { createH1Server, type H1Server } from './h1-server.ts'
import { DEFAULT_SEND_TIMEOUT_MS } from './send-deadline.ts'
import type { H1Request } from './h1-server-request.ts'
import type { H1Response } from './h1-server-response.ts'
import { carryTcp } from './outbound-tcp.ts'
import type { QuarantineSource } from '../quarantine/source.ts'

// The outbound listener: the app calls other services through HTTP_PROXY=http://127.0.0.1:15001
// with plain http:// URLs (or CONNECT, as grpc-js and grpc-go do with grpc_proxy/https_proxy, then
// HTTP/2 or HTTP/1.1 inside the tunnel). Each destination host must be in the route table; the call
// leaves the pod only as a stream on the mTLS HTTP/2 link to the destination's sidecar
// (mesh-link.ts), which must present the SPIFFE ID of the route. Unknown destinations are refused,
// and CONNECT to anything but a route only to listed host:ports (opaque, outside the mesh).

export interface OutboundOptions {
  listen: { host: string, port: number }
  credentials: Credentials
  routes: RouteTable
  logger: Logger
  connectTimeoutMs: number
  responseTimeoutMs: number
  /** host:port pairs CONNECT may tunnel to (plain TCP, outside the mesh); empty = CONNECT refused. */
  allowConnect: string[]
  /** Opaque TCP through tcp routes' listeners (outbound-tcp.ts). */
  tcpIdleTimeoutMs: number
  /** Per route listener (route-listeners.ts). */
  routeMaxConnections: number
  /** The reason our own identity is quarantined, if it is: then nothing is originated. */
  selfQuarantined?: () => string | undefined
  quarantine?: QuarantineSource
  onRequest?: (outcome: string) => void
  /** The app's HTTP/1.1 calls on kept-alive HTTP/1.1 mTLS connections (mesh-pool.ts, Istio's default) instead of streams on the HTTP/2 link (Linkerd's way, the default). */
  meshHttp1?: boolean
}

export interface Outbound { server: Server, port: number, routeListeners: RouteListeners, close: (drainMs?: number) => Promise<void> }

/** The app's plain HTTP/1.1 (the outbound listener, a route's listener): node:http's limits of before, and the send deadline. */
const APP_SIDE_H1 = { maxHeaderSize: 16 * 1024, headersTimeoutMs: 10_000, requestTimeoutMs: 0, idleTimeoutMs: 60_000, sendTimeoutMs: DEFAULT_SEND_TIMEOUT_MS }

/** The HTTP/2 client preface starts with this method name; no HTTP/1.1 request does. */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0')

export async function startOutbound (o: OutboundOptions): Promise<Outbound> {
  const { logger } = o
  const links = new MeshLinks({ credentials: o.credentials, connectTimeoutMs: o.connectTimeoutMs, logger })
  const pools = o.meshHttp1 !== true ? undefined : new MeshPools({ credentials: o.credentials, connectTimeoutMs: o.connectTimeoutMs, responseTimeoutMs: o.responseTimeoutMs, logger })
  const retireAll = (): void => { links.retireAll(); pools?.retireAll() }
  // Routes changed (a destination may now expect another SPIFFE ID), or our SVID rotated (new
  // connections must present the new one): the current links and pools take nothing new, finish
  // what they carry, and close.
  o.routes.onChange(retireAll)
  let own = o.credentials.current
  o.credentials.on('change', () => {
    const now = o.credentials.current
    if (now?.leaf.serialHex !== own?.leaf.serialHex) { own = now; retireAll() }
  })

  // Quarantined ourselves: the connections we hold go, and nothing new is originated (checked per call).
  o.quarantine?.onChange(() => { if (o.selfQuarantined?.() !== undefined) retireAll() })
  const quarantinedRefusal = (): Refusal | undefined => {
    const reason = o.selfQuarantined?.()
    if (reason === undefined) return undefined
    const err = new QuarantinedError(o.credentials.current?.id.toString() ?? 'this workload', reason)
    logger.warn({ event: 'outbound.refused', code: err.code, reason }, 'this workload is quarantined: outbound call refused')
    return refusal(err)
  }

  /**
   * One request to a routed destination: a stream on the route's link (mesh-link.ts), or with
   * --mesh-http1 an HTTP/1.1 call on the route's pool of kept-alive mTLS connections (mesh-pool.ts).
   */
  const forward = (route: Route, fr: ForwardRequest, sink: ResponseSink, refuse: (r: Refusal) => void, h1 = false): void => {
    const held = quarantinedRefusal()
    if (held !== undefined) { refuse(held); o.onRequest?.('quarantined'); return }
    const failed = (err: GatehouseError, outcome: string): void => {
      if (sink.headersSent) sink.destroy()
      else refuse(refusal(err))
      o.onRequest?.(outcome)
    }
    const connectFailed = (err: Error & { code?: string }): void => {
      if (err instanceof PeerIdentityError) {
        logger.error({ event: 'outbound.peer_refused', code: err.code, reason: err.reason, host: fr.headers.host, route: route.id, detail: err.message }, 'destination did not present the expected SPIFFE ID')
        failed(err, 'identity-mismatch')
        return
      }
      logger.warn({ event: 'outbound.failed', code: err.code, host: fr.headers.host, route: route.id, detail: err.message }, 'outbound call failed')
      failed(new UpstreamUnavailableError(err.message), 'unavailable')
    }
    const settled = (out: ForwardOutcome): void => {
      if (out.kind === 'response' || out.kind === 'client-gone' || out.kind === 'upgraded') { o.onRequest?.('forwarded'); return }
      if (out.kind === 'upstream-unavailable' && out.cause !== undefined) { connectFailed(out.cause); return }
      logger.warn({ event: 'outbound.failed', kind: out.kind, host: fr.headers.host, route: route.id, detail: out.error }, 'outbound call failed')
      if (out.kind === 'upstream-timeout') failed(new UpstreamTimeoutError(out.error), 'timeout')
      else failed(new UpstreamUnavailableError(out.error), 'unavailable')
    }
    if (h1 && pools !== undefined && !isGrpc(fr.headers as IncomingHttpHeaders)) { forwardH1Pool(fr, sink, { pool: pools.pool(route) }, settled); return }
    // A stream the link's peer refused unprocessed goes again, once, on the link there is then: a
    // rotation's GOAWAY can cross a request on the wire (nghttp2 sends GOAWAY ahead of the HEADERS
    // queued in the same turn), and so can the callee's at its caller's certificate expiry. Only
    // without a body: a body already read into the refused stream cannot be read again.
    const onLink = (again: boolean): void => {
      links.session(route).then((session) => {
        forwardH2(fr, sink, session, { responseTimeoutMs: o.responseTimeoutMs, scheme: 'https' }, (out) => {
          if (again && out.kind === 'upstream-unavailable' && out.refused === true && fr.body === null && !sink.headersSent) {
            logger.debug({ event: 'outbound.retried', route: route.id, host: fr.headers.host }, 'stream refused unprocessed by the destination; sent again on a new link')
            onLink(false)
            return
          }
          settled(out)
        })
      }, connectFailed)
    }
    onLink(true)
  }

  const handle = (req: H1Request, res: H1Response): void => {
    const reply = (r: Refusal, outcome: string): void => { refuseH1(res, r); o.onRequest?.(outcome) }
    // The HTTP version, or an HTTP/1.1 request without Host (node:http's server refused these itself).
    const problem = req.protocolProblem
    if (problem !== undefined) { reply(refusal(new OutboundBadTargetError(problem)), 'bad-target'); return }
    let url: URL
    try {
      // HTTP_PROXY clients send absolute-form; a client that talks to us directly sends origin-form + Host.
      url = new URL(req.url.startsWith('/') ? `http://${String(req.headers.host ?? '')}${req.url}` : req.url)
    } catch {
      reply(refusal(new OutboundBadTargetError('request target is not a URL')), 'bad-target'); return
    }
    if (url.protocol !== 'http:') {
      reply(refusal(new OutboundBadTargetError(`${url.protocol} URLs cannot be proxied; call http:// and the sidecar adds mTLS`)), 'bad-target'); return
    }
    const port = url.port === '' ? 80 : Number(url.port)
    const host = url.hostname.replace(/^\[|\]$/g, '')
    const route = o.routes.lookup(host, port)
    if (route === undefined) {
      logger.warn({ event: 'outbound.refused', code: 'GH_OUTBOUND_UNKNOWN_DESTINATION', host, port }, 'outbound call to an unknown destination refused')
      reply(refusal(new OutboundUnknownDestinationError(`${host}:${port} is not in the routes file`)), 'unknown-destination'); return
    }
    // node:http's server invited the body of every such request; here only one that is routed.
    if (req.expectsContinue) res.writeContinue()
    forwardH1(route, req, res, r => { refuseH1(res, r) }, url.host, `${url.pathname}${url.search}`)
  }

  /** An HTTP/1.1 request, its route known: on the route's link with the Host the callee expects. */
  const forwardH1 = (route: Route, req: { method: string, headers: IncomingHttpHeaders, body: Readable | null }, sink: ResponseSink, refuse: (r: Refusal) => void, host: string, target: string): void => {
    const headers = endToEndHeaders(req.headers, ['expect'])
    headers.host = host
    forward(route, { method: req.method, target, headers, body: req.body }, sink, refuse, true)
  }

  // HTTP/2 inside a CONNECT tunnel to a routed destination (grpc-js, grpc-go): every stream goes to
  // the tunnel's route, whatever its :authority says. Which route is set for the duration of accept.
  const tunnels = createH2cServer({ settings: { enablePush: false } })
  const tunnelRoutes = new WeakMap<Http2Session, Route>()
  let accepting: Route | undefined
  tunnels.on('session', (session: Http2Session) => {
    if (accepting === undefined) { session.destroy(); return }
    tunnelRoutes.set(session, accepting)
    session.on('error', () => { /* the app's connection went away; its streams are settled on their own */ })
  })
  tunnels.on('stream', (stream: ServerHttp2Stream, headers: H2Headers, flags: number) => {
    stream.on('error', () => {})
    const route = tunnelRoutes.get(stream.session as Http2Session)
    const grpc = isGrpc(headers)
    if (route === undefined) { refuseH2(stream, refusal(new UpstreamUnavailableError('this tunnel has no route')), grpc); return }
    const out = endToEndHeaders(headers, ['host'])
    out.host = String(headers[':authority'] ?? headers.host ?? '')
    // A PassThrough: the stream's readable side is the body; ending the body must not end the stream.
    const body = (flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0 ? null : stream.pipe(new PassThrough())
    forward(route, { method: String(headers[':method']), target: String(headers[':path'] ?? '/'), headers: out, body }, new H2Sink(stream), r => { refuseH2(stream, r, grpc) })
  })
  const sessions = new Set<Http2Session>()
  tunnels.on('session', (s: Http2Session) => { sessions.add(s); s.once('close', () => { sessions.delete(s) }) })

  // The app's plain HTTP/1.1, on Gatehouse's own server (h1-server.ts), with node:http's limits of before.
  const connectTunnel = (req: H1Request, socket: Socket, head: Buffer): void => {
    // A raw socket is ours once 'connect' fires: without an error listener a client reset would crash the process.
    socket.on('error', () => { socket.destroy() })
    const target = req.url.toLowerCase()
    const sep = target.lastIndexOf(':')
    // A tunnel to a routed destination is not opaque: its first bytes say HTTP/2 (grpc-js, grpc-go)
    // or HTTP/1.1 (undici/fetch tunnel even http:// URLs), and each request inside is routed, sent
    // over the mesh link and checked like any other.
    const route = sep > 0 ? o.routes.lookup(target.slice(0, sep).replace(/^\[|\]$/g, ''), Number(target.slice(sep + 1))) : undefined
    if (route !== undefined) {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      const dispatch = (first: Buffer): void => {
        socket.unshift(first)
        if (first.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)) {
          accepting = route
          try { tunnels.emit('connection', socket) } finally { accepting = undefined }
        } else {
          h1.accept(socket)
          // The parser reads the socket's handle; what was already read (and unshifted) flows once resumed.
          socket.resume()
        }
      }
      if (head.length > 0) dispatch(head)
      else {
        socket.once('data', (chunk: Buffer) => { socket.pause(); dispatch(chunk) })
        // The HTTP/1.1 server handed the socket over paused.
        socket.resume()
      }
      return
    }
    const held = quarantinedRefusal()
    if (held !== undefined) { refuseRaw(socket, held); return }
    if (!o.allowConnect.includes(target)) {
      logger.warn({ event: 'outbound.refused', code: 'GH_OUTBOUND_CONNECT_REFUSED', target }, 'CONNECT refused')
      refuseRaw(socket, refusal(new OutboundConnectRefusedError(`${target} is neither a route nor on --allow-connect`)))
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
    upstream.on('error', (err: Error) => { if (established) close(); else refuseRaw(socket, refusal(new UpstreamUnavailableError(`cannot connect to ${target}: ${err.message}`))) })
    upstream.on('close', () => { if (established) socket.end() })
    socket.on('error', close)
  }
  // An Upgrade through HTTP_PROXY or a route's listener (node:http forwarded it as a plain request,
  // Upgrade dropped): a tunnel is CONNECT's job.
  const noUpgrade = (_req: H1Request, socket: Socket): void => {
    socket.on('error', () => { socket.destroy() })
    refuseRaw(socket, refusal(new OutboundBadTargetError('Upgrade is not relayed by the outbound listener; open a CONNECT tunnel')))
    o.onRequest?.('bad-target')
  }
  const clientError = (err: { code: string, bytesParsed?: number }, socket: Socket): void => {
    if (socket.writable && err.bytesParsed !== undefined) refuseRaw(socket, refusal(err.code === 'HPE_HEADER_OVERFLOW' ? new HeadersTooLargeError() : new BadRequestError('the request cannot be parsed as HTTP/1.1')))
    else socket.destroy()
  }
  const h1 = createH1Server(APP_SIDE_H1, { request: handle, connect: connectTunnel, upgrade: noUpgrade, clientError })

  // Plain HTTP to a route's own listener: the request names no host, the route does. The same
  // server as the outbound listener's; CONNECT is the outbound listener's alone.
  const routeServer = (route: Route): H1Server => createH1Server(APP_SIDE_H1, {
    request: (req, res) => {
      const problem = req.protocolProblem
      if (problem !== undefined) { refuseH1(res, refusal(new OutboundBadTargetError(problem))); o.onRequest?.('bad-target'); return }
      if (req.expectsContinue) res.writeContinue()
      forwardH1(route, req, res, r => { refuseH1(res, r) }, route.port === undefined ? route.host : `${route.host}:${route.port}`, req.url)
    },
    connect: (_req, socket) => {
      socket.on('error', () => { socket.destroy() })
      refuseRaw(socket, refusal(new OutboundBadTargetError(`a route's listener carries plain HTTP to ${route.host}; CONNECT is for the outbound listener`)))
      o.onRequest?.('bad-target')
    },
    upgrade: noUpgrade,
    clientError
  })
  const server = createServer({ noDelay: true }, socket => { h1.accept(socket) })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(o.listen.port, o.listen.host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  logger.info({ event: 'outbound.listening', host: o.listen.host, port }, 'outbound listener ready')
  const routeListeners = startRouteListeners({
    routes: o.routes,
    maxConnections: o.routeMaxConnections,
    logger,
    http: routeServer,
    tcp: (route, socket) => {
      if (quarantinedRefusal() !== undefined) { socket.destroy(); return }
      carryTcp(route, socket, { credentials: o.credentials, connectTimeoutMs: o.connectTimeoutMs, idleTimeoutMs: o.tcpIdleTimeoutMs, logger })
    }
  })
  await routeListeners.settled()
  return {
    server,
    port,
    routeListeners,
    close: async (drainMs = 5000) => {
      for (const s of sessions) s.close()
      await Promise.all([
        new Promise<void>(resolve => { server.close(() => { resolve() }); h1.closeIdle() }),
        routeListeners.close(drainMs)
      ])
      await Promise.all([links.close(), pools?.close()])
    }
  }
}
