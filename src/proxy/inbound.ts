import { createServer, type Server } from 'node:https'
import { STATUS_CODES, type IncomingMessage, type ServerResponse, type OutgoingHttpHeaders } from 'node:http'
import type { TLSSocket } from 'node:tls'
import type { Duplex } from 'node:stream'
import type { AddressInfo } from 'node:net'
import { randomUUID, constants } from 'node:crypto'
import { rateLimited, type Logger } from '../log.ts'
import { GatehouseError } from '../errors.ts'
import { verifyPeer, handshakeFailureReason, type PeerIdentity } from '../spiffe/peer.ts'
import { normalizeTarget, isValidMethod } from '../policy/normalize.ts'
import { decide } from '../policy/decide.ts'
import type { PolicyStore } from '../policy/store.ts'
import type { DecisionLog, DecisionFields } from '../audit/record.ts'
import type { Credentials } from './credentials.ts'
import type { ProxyMetrics } from './metrics.ts'
import { endToEndHeaders, forwardRequest, forwardUpgrade, type ForwardOptions, type ForwardOutcome } from './forward.ts'
import { allowedOffer, offeredProtocols } from './upgrade.ts'
import { drainBounded } from '../http-body.ts'
import { guardHandshakes } from './handshake-guard.ts'
import { UNBOUNDED_LIMITS } from './connection-budget.ts'

// The inbound path, top to bottom: TLS handshake (client certificate required) -> the peer's
// X.509-SVID verified -> request target and method normalized -> policy decision -> decision log
// -> forward to the app. A refusal at any step is a response written in one place (`refuse`).

export interface InboundOptions extends InboundLimits {
  listen: { host: string, port: number }
  credentials: Credentials
  policy: PolicyStore
  decisions: DecisionLog
  metrics: ProxyMetrics
  logger: Logger
  forward: ForwardOptions
  /** Upgrade protocols relayed after authorization (see upgrade.ts); any other Upgrade is refused. */
  upgradeProtocols: readonly string[]
}

/** The listener's TLS version, timeouts and limits (each a flag of `gatehouse proxy`). */
export interface InboundLimits {
  tlsMinVersion: 'TLSv1.2' | 'TLSv1.3'
  handshakeTimeoutMs: number
  headersTimeoutMs: number
  requestTimeoutMs: number
  idleTimeoutMs: number
  maxHeaderSize: number
  maxConnections: number
  /** Connections still in their TLS handshake (handshake-guard.ts); default 1024. */
  maxPendingHandshakes?: number
}

/**
 * After a refusal, at most this much of the request's body is read (and discarded) so the response
 * can be read on a kept-alive connection; past it, or past DENIED_DRAIN_MS, the connection is closed.
 * A denied caller cannot hold a connection open by trickling a large body.
 */
export const DENIED_DRAIN_BYTES = 64 * 1024
export const DENIED_DRAIN_MS = 2000

export interface Inbound { server: Server, port: number, pendingHandshakes: () => number, close: (drainMs: number) => Promise<void> }

const REQUEST_ID = /^[\w.:=+/-]{1,128}$/

type Verdict =
  | { ok: false, status: number, body: Record<string, unknown>, fields: DecisionFields }
  | { ok: true, target: string, headers: OutgoingHttpHeaders, fields: DecisionFields }

export async function startInbound (opts: InboundOptions): Promise<Inbound> {
  const { credentials, policy, decisions, metrics, logger } = opts
  const peers = new WeakMap<object, PeerIdentity>()
  const upgradeAllowed = new Set(opts.upgradeProtocols.map(p => p.toLowerCase()))
  /** The request in flight on a socket, so a parse error in its body completes its one decision line. */
  const inFlight = new WeakMap<object, { fields: DecisionFields, start: number }>()
  /** Decision lines already written: each request gets exactly one, whichever path ends it. */
  const recorded = new WeakSet<DecisionFields>()
  /** Sockets with a request in flight (an expiring peer's connection is closed only when idle). */
  const busy = new WeakSet<object>()

  const context = (): Record<string, unknown> => {
    const { cert, key } = credentials.tls()
    // No `ca`: client chains are verified by the SVID verifier against the per-trust-domain bundle
    // (as go-spiffe does). With `ca`, Node 24 stops exposing the presented chain (nodejs/node#65579).
    // No session resumption: a resumed session skips certificate validation (an SVID that has since
    // expired would be let back in) and carries no chain to verify. Every connection handshakes fully.
    return { cert, key, minVersion: opts.tlsMinVersion, secureOptions: constants.SSL_OP_NO_TICKET, sessionTimeout: 0 }
  }

  const server = createServer({
    ...context(),
    requestCert: true,
    rejectUnauthorized: false,
    handshakeTimeout: opts.handshakeTimeoutMs,
    headersTimeout: opts.headersTimeoutMs,
    requestTimeout: opts.requestTimeoutMs,
    // Node enforces headersTimeout/requestTimeout only when it sweeps connections, every 30 s by
    // default: a 10 s headers deadline would let a slowloris hold a socket for up to 40 s.
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(opts.headersTimeoutMs / 4))),
    keepAliveTimeout: opts.idleTimeoutMs,
    maxHeaderSize: opts.maxHeaderSize
  })
  server.maxConnections = opts.maxConnections
  const handshakes = guardHandshakes(server, opts.maxPendingHandshakes ?? UNBOUNDED_LIMITS.maxPendingHandshakes, () => {
    // Counted, not logged one by one: a flood would otherwise become a flood of log lines.
    metrics.handshakeFailures.inc({ reason: 'max-pending-handshakes' })
  })

  credentials.on('change', () => {
    try { server.setSecureContext(context()) } catch (err) { logger.error({ err }, 'cannot apply new TLS material; keeping the current one') }
  })

  const tlsRefusalLog = rateLimited()
  const refuseHandshake = (socket: TLSSocket, reason: string, message: string): void => {
    metrics.handshakeFailures.inc({ reason })
    tlsRefusalLog(suppressed => { logger.warn({ event: 'tls.refused', reason, detail: message, remote: socket.remoteAddress, ...(suppressed > 0 ? { suppressed } : {}) }, 'refused inbound TLS peer') })
    socket.destroy()
  }

  // prependListener: runs before the HTTP machinery sees the socket, so an unverified peer's bytes
  // are never parsed, let alone forwarded.
  server.prependListener('secureConnection', (socket: TLSSocket) => {
    const bundle = credentials.bundle
    if (bundle === undefined) { refuseHandshake(socket, 'no-bundle', 'no trust bundle loaded'); return }
    if (socket.isSessionReused()) { refuseHandshake(socket, 'session-resumed', 'TLS session resumption is not accepted'); return }
    try {
      const peer = verifyPeer(socket, bundle)
      peers.set(socket, peer)
      metrics.connections.inc()
      // Continuous verification: a kept-alive connection does not outlive its peer's certificate.
      // At expiry an idle connection is closed; a request in flight finishes, and the next request
      // on it is refused (see authorize), so the caller must handshake again with a fresh SVID.
      const expiry = setTimeout(() => {
        if (!busy.has(socket)) socket.destroy()
      }, Math.min(Math.max(0, peer.notAfter.getTime() - Date.now()), 2 ** 31 - 1))
      expiry.unref()
      socket.once('close', () => { metrics.connections.dec(); clearTimeout(expiry) })
    } catch (err) {
      const reason = (err as { reason?: string }).reason ?? 'not-svid'
      refuseHandshake(socket, reason, (err as Error).message)
    }
  })
  server.on('tlsClientError', (err, socket) => {
    const reason = handshakeFailureReason(err as NodeJS.ErrnoException)
    metrics.handshakeFailures.inc({ reason })
    tlsRefusalLog(suppressed => { logger.warn({ event: 'tls.refused', reason, detail: err.message, remote: socket.remoteAddress, ...(suppressed > 0 ? { suppressed } : {}) }, 'inbound TLS handshake failed') })
  })
  // Over --max-connections Node drops the connection silently: count and log it.
  server.on('drop', (data?: { remoteAddress?: string, remotePort?: number }) => {
    metrics.handshakeFailures.inc({ reason: 'max-connections' })
    tlsRefusalLog(suppressed => { logger.warn({ event: 'tls.refused', reason: 'max-connections', remote: `${data?.remoteAddress ?? '?'}:${data?.remotePort ?? '?'}`, ...(suppressed > 0 ? { suppressed } : {}) }, 'connection dropped: --max-connections reached') })
  })

  function authorize (req: IncomingMessage): Verdict {
    const peer = peers.get(req.socket)
    const active = policy.current
    const own = credentials.current
    const incomingId = req.headers['x-request-id']
    const requestId = typeof incomingId === 'string' && REQUEST_ID.test(incomingId) ? incomingId : randomUUID()
    const fields: DecisionFields = {
      requestId,
      decision: 'deny',
      mode: active?.compiled.mode ?? 'enforce',
      enforced: true,
      rule: null,
      reason: '',
      caller: peer?.id ?? null,
      callee: own?.id.toString() ?? null,
      method: req.method ?? '',
      path: null,
      rawPath: req.url ?? '',
      status: 0,
      durationMs: 0,
      policyRevision: active?.revision ?? null,
      peerCertSerial: peer?.serial ?? null
    }
    const refuse = (status: number, reason: string, body: Record<string, unknown>): Verdict => {
      fields.reason = reason
      if (status === 400) fields.error = reason
      return { ok: false, status, body: { ...body, requestId }, fields }
    }
    if (peer === undefined) return refuse(403, 'no-verified-peer', { error: 'forbidden' })
    if (Date.now() > peer.notAfter.getTime()) {
      req.socket.once('finish', () => { req.socket.destroy() })
      return refuse(401, 'peer-certificate-expired', { error: 'peer_certificate_expired' })
    }
    // llhttp takes a request line without a version as HTTP/0.9, and any digit pair after "HTTP/".
    if (req.httpVersionMajor !== 1) { metrics.rejected.inc({ reason: 'version' }); return refuse(400, 'bad-request: the request line must end with HTTP/1.1 or HTTP/1.0', { error: 'bad_request', reason: 'the request line must end with HTTP/1.1 or HTTP/1.0' }) }
    if (!isValidMethod(fields.method)) { metrics.rejected.inc({ reason: 'method' }); return refuse(400, 'bad-request: method is not an upper-case token', { error: 'bad_request', reason: 'method is not an upper-case token' }) }
    const n = normalizeTarget(fields.rawPath)
    if (!n.ok) { metrics.rejected.inc({ reason: 'target' }); return refuse(400, `bad-request: ${n.reason}`, { error: 'bad_request', reason: n.reason }) }
    fields.path = n.path
    if (active === undefined || own === undefined) return refuse(503, 'not-ready: no policy or identity loaded', { error: 'unavailable' })
    const d = decide(active.compiled, { caller: peer, method: fields.method, path: n.path, segments: n.segments })
    fields.decision = d.decision
    fields.mode = d.mode
    fields.rule = d.rule
    fields.reason = d.reason
    fields.enforced = !d.allowed || d.decision === 'allow'
    if (d.shadowDecision !== undefined) { fields.shadowDecision = d.shadowDecision; fields.shadowRule = d.shadowRule ?? null }
    metrics.requests.inc({ decision: d.decision, rule: d.rule ?? '', mode: d.mode, caller: metrics.callerLabel(peer.id) })
    if (!d.allowed) return refuse(403, d.reason, { error: 'forbidden' })
    const headers = endToEndHeaders(req.headers, ['x-forwarded-client-cert', 'x-request-id'])
    headers['x-forwarded-client-cert'] = `By=${own.id.toString()};Hash=${peer.certHash};URI=${peer.id}`
    headers['x-request-id'] = requestId
    return { ok: true, target: n.target, headers, fields }
  }

  const record = (fields: DecisionFields, status: number, start: number, error?: string): void => {
    if (recorded.has(fields)) return
    recorded.add(fields)
    fields.status = status
    fields.durationMs = Math.round((performance.now() - start) * 1000) / 1000
    if (error !== undefined) fields.error = error
    metrics.duration.observe({ decision: fields.decision }, fields.durationMs / 1000)
    try { decisions.write(fields) } catch (err) { logger.error({ err, requestId: fields.requestId }, 'decision log write failed') }
  }

  const outcomeError = (o: ForwardOutcome): string | undefined => {
    if (o.kind === 'upstream-unavailable' || o.kind === 'upstream-timeout' || o.kind === 'upstream-reset') {
      metrics.upstreamErrors.inc({ kind: o.kind })
      logger.warn({ event: 'upstream.failed', kind: o.kind, error: o.error }, 'app did not answer')
      return `${o.kind}: ${o.error}`
    }
    return o.kind === 'client-gone' ? 'client-gone' : undefined
  }

  /** A decision line for a request we could not even fully read or judge. */
  const bareFields = (peer: PeerIdentity | undefined, method: string, rawPath: string, reason: string): DecisionFields => ({
    requestId: randomUUID(), decision: 'deny', mode: policy.current?.compiled.mode ?? 'enforce', enforced: true, rule: null, reason,
    caller: peer?.id ?? null, callee: credentials.current?.id.toString() ?? null, method, path: null, rawPath, status: 0, durationMs: 0,
    policyRevision: policy.current?.revision ?? null, peerCertSerial: peer?.serial ?? null
  })

  /** authorize(), failing closed: an unexpected error denies with 500 and is logged, never thrown. */
  const judge = (req: IncomingMessage): Verdict => {
    try { return authorize(req) } catch (err) {
      logger.error({ err }, 'authorization failed unexpectedly; denying')
      return { ok: false, status: 500, body: { error: 'internal' }, fields: bareFields(peers.get(req.socket), req.method ?? '', req.url ?? '', `internal: ${(err as GatehouseError).code ?? 'GH_INTERNAL'}`) }
    }
  }

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const start = performance.now()
    busy.add(req.socket)
    res.once('close', () => { busy.delete(req.socket) })
    const verdict = judge(req)
    inFlight.set(req.socket, { fields: verdict.fields, start })
    if (!verdict.ok) {
      const body = JSON.stringify(verdict.body)
      // A body too large to drain cheaply ends the connection: say so, so the client does not reuse it.
      const close = verdict.status === 400 || verdict.status === 401 || !drainBounded(req, DENIED_DRAIN_BYTES, DENIED_DRAIN_MS)
      res.writeHead(verdict.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...(close ? { connection: 'close' } : {}) })
      res.end(body)
      record(verdict.fields, verdict.status, start)
      return
    }
    const fields = verdict.fields
    forwardRequest(req, res, verdict.target, verdict.headers, opts.forward, (o) => {
      if (o.status === 502 || o.status === 504) {
        if (!res.headersSent) {
          const body = JSON.stringify({ error: o.status === 502 ? 'upstream_unavailable' : 'upstream_timeout', requestId: fields.requestId })
          res.writeHead(o.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
          res.end(body)
        }
      }
      record(fields, o.status, start, outcomeError(o))
    })
  })

  /** A refusal on a socket Node has handed over raw (Upgrade, CONNECT): the answer, then close. */
  const refuseRaw = (socket: Duplex, verdict: Extract<Verdict, { ok: false }>, start: number): void => {
    const body = JSON.stringify(verdict.body)
    socket.end(`HTTP/1.1 ${verdict.status} ${STATUS_CODES[verdict.status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
    record(verdict.fields, verdict.status, start)
  }

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // A raw socket is ours once 'upgrade' fires: without an error listener a client reset would crash the process.
    socket.on('error', () => { socket.destroy() })
    const start = performance.now()
    const verdict = judge(req)
    if (!verdict.ok) { refuseRaw(socket, verdict, start); return }
    // Authorized, but only a listed protocol may become a tunnel (upgrade.ts says why).
    const offered = offeredProtocols(req.headers.upgrade)
    const relay = allowedOffer(offered, upgradeAllowed)
    if (relay.length === 0) {
      metrics.rejected.inc({ reason: 'upgrade' })
      const reason = `upgrade-not-allowed: ${JSON.stringify(req.headers.upgrade ?? '')} is not on --upgrade-protocols (${[...upgradeAllowed].join(', ') || 'none'})`
      verdict.fields.error = 'upgrade-not-allowed'
      refuseRaw(socket, { ok: false, status: 400, body: { error: 'upgrade_not_allowed', reason: `upgrade to ${offered.join(', ') || '(none)'} is not relayed`, requestId: verdict.fields.requestId }, fields: { ...verdict.fields, decision: 'deny', enforced: true, rule: null, reason } }, start)
      return
    }
    forwardUpgrade(req, socket, head, verdict.target, { ...verdict.headers, upgrade: relay.join(', ') }, relay, opts.forward, (o) => { record(verdict.fields, o.status, start, outcomeError(o)) })
  })

  // An inbound CONNECT asks the sidecar for a tunnel to somewhere else: never granted here (the
  // listener fronts one app), but answered and logged like any other refused request.
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => { socket.destroy() })
    const start = performance.now()
    const peer = peers.get(req.socket)
    const fields = bareFields(peer, req.method ?? 'CONNECT', req.url ?? '', 'connect-not-supported: the inbound listener does not open tunnels')
    fields.error = 'connect-not-supported'
    metrics.rejected.inc({ reason: 'connect' })
    refuseRaw(socket, { ok: false, status: 405, body: { error: 'method_not_allowed', reason: 'CONNECT is not supported inbound', requestId: fields.requestId }, fields }, start)
  })

  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Unparseable HTTP (smuggling attempts, oversized headers): answer 400/431 and close; the app never sees it.
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400
    metrics.rejected.inc({ reason: err.code ?? 'parse-error' })
    const peer = peers.get(socket)
    logger.warn({ event: 'http.rejected', code: err.code, caller: peer?.id ?? null }, 'malformed HTTP request refused')
    // A request already judged whose body then failed to parse: its one decision line ends with this
    // status (not a second line, and not the client-gone that the aborted forward would report).
    const current = inFlight.get(socket)
    const pending = current !== undefined && !recorded.has(current.fields) ? current : undefined
    if (pending !== undefined) record(pending.fields, status, pending.start, err.code ?? 'parse-error')
    if (socket.writable && (err as { bytesParsed?: number }).bytesParsed !== undefined) {
      socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`)
      // Rejected as malformed by the parser: still exactly one decision line (method and path unknown).
      if (peer !== undefined && pending === undefined) {
        const fields = bareFields(peer, '', '', `bad-request: ${err.code ?? 'unparseable HTTP'}`)
        fields.error = err.code ?? 'parse-error'
        record(fields, status, performance.now())
      }
    } else socket.destroy()
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.listen.port, opts.listen.host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  logger.info({ event: 'inbound.listening', host: opts.listen.host, port, tlsMinVersion: opts.tlsMinVersion }, 'inbound mTLS listener ready')
  return {
    server,
    port,
    pendingHandshakes: handshakes.pending,
    close: async (drainMs: number) => {
      // Stop accepting, let in-flight requests finish, then cut what is left.
      const closed = new Promise<void>(resolve => server.close(() => { resolve() }))
      server.closeIdleConnections()
      const timer = setTimeout(() => { server.closeAllConnections() }, drainMs)
      await closed
      clearTimeout(timer)
    }
  }
}
