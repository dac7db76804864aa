import { createServer, type Server, type TLSSocket } from 'node:tls'
import type { AddressInfo } from 'node:net'
import { constants } from 'node:crypto'
import { rateLimited, type Logger } from '../log.ts'
import { verifyPeer, handshakeFailureReason, type PeerIdentity } from '../spiffe/peer.ts'
import type { PolicyStore } from '../policy/policy-store.ts'
import type { DecisionLog, DecisionFields } from '../audit/record.ts'
import type { Credentials } from '../identity/credentials.ts'
import type { ProxyMetrics } from './proxy-metrics.ts'
import type { AppUpstream } from './app-upstream.ts'
import { createJudge } from './judge.ts'
import { createH1Stage, requestInFlight } from './inbound-h1.ts'
import { DEFAULT_SEND_TIMEOUT_MS } from './send-deadline.ts'
import { createH2Stage, DEFAULT_MAX_CONCURRENT_STREAMS } from './inbound-h2.ts'
import { guardHandshakes } from './handshake-guard.ts'
import { UNBOUNDED_LIMITS } from './connection-budget.ts'
import { createTcpStage } from './inbound-tcp.ts'
import { TCP_ALPN } from './opaque-tcp.ts'
import type { QuarantineSource } from '../quarantine/source.ts'

// The inbound listener and its TLS stage: the handshake (client certificate required), the peer's
// X.509-SVID verified before a byte of HTTP is parsed, then the connection handed to its protocol
// stage by ALPN: inbound-h1.ts, inbound-h2.ts, or inbound-tcp.ts (opaque TCP). Those judge each request (judge.ts -> authorize.ts),
// write its decision line, and forward it (app-upstream.ts); refusals are written by refusal.ts.

export interface InboundOptions extends InboundLimits {
  listen: { host: string, port: number }
  credentials: Credentials
  policy: PolicyStore
  decisions: DecisionLog
  metrics: ProxyMetrics
  logger: Logger
  app: AppUpstream
  /** Upgrade protocols relayed after authorization (see upgrade.ts); any other Upgrade is refused. */
  upgradeProtocols: readonly string[]
  /** Opaque TCP app ports (--upstream-tcp): app port -> address (inbound-tcp.ts). */
  tcpUpstreams?: ReadonlyMap<number, { host: string, port: number }>
  /** Time to connect to the app (opaque TCP). */
  upstreamConnectTimeoutMs?: number
  /** An opaque TCP connection with no byte either way for this long is closed. */
  tcpIdleTimeoutMs?: number
  /** Callers denied before the policy; their live connections are closed when they appear in it. */
  quarantine: QuarantineSource
  /** Every decision line written, with its seq (the compromise detectors). */
  onDecision?: (fields: DecisionFields, seq: number) => void
  /** A verified peer that is quarantined connected anyway. */
  onQuarantinedPeer?: (peer: PeerIdentity) => void
}

/** The listener's TLS version, timeouts and limits (each a flag of `gatehouse proxy`). */
export interface InboundLimits {
  tlsMinVersion: 'TLSv1.2' | 'TLSv1.3'
  handshakeTimeoutMs: number
  headersTimeoutMs: number
  requestTimeoutMs: number
  idleTimeoutMs: number
  /** A caller that takes none of its answer for this long loses its connection (HTTP/1.1) or stream (HTTP/2); default DEFAULT_SEND_TIMEOUT_MS. */
  sendTimeoutMs?: number
  maxHeaderSize: number
  maxConnections: number
  /** Connections still in their TLS handshake (handshake-guard.ts); default 1024. */
  maxPendingHandshakes?: number
  /** HTTP/2 streams per connection (inbound-h2.ts); default 100. */
  maxConcurrentStreams?: number
}

export interface Inbound { server: Server, port: number, pendingHandshakes: () => number, close: (drainMs: number) => Promise<void> }

export async function startInbound (opts: InboundOptions): Promise<Inbound> {
  const { credentials, policy, decisions, metrics, logger } = opts
  /** Every verified connection, for closing a newly quarantined caller's. */
  const live = new Map<TLSSocket, PeerIdentity>()

  const context = (): Record<string, unknown> => {
    const { cert, key } = credentials.tls()
    // No `ca`: client chains are verified by the SVID verifier against the per-trust-domain bundle
    // (as go-spiffe does). With `ca`, Node 24 stops exposing the presented chain (nodejs/node#65579).
    // No session resumption: a resumed session skips certificate validation (an SVID that has since
    // expired would be let back in) and carries no chain to verify. Every connection handshakes fully.
    return { cert, key, minVersion: opts.tlsMinVersion, secureOptions: constants.SSL_OP_NO_TICKET, sessionTimeout: 0, ALPNProtocols: ['h2', 'http/1.1', TCP_ALPN] }
  }

  const server = createServer({
    ...context(),
    requestCert: true,
    rejectUnauthorized: false,
    handshakeTimeout: opts.handshakeTimeoutMs
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

  // A connection reaches its protocol stage only after the peer is verified: an unverified peer's
  // bytes are never parsed, let alone forwarded, and an h2 connection is never read as HTTP/1.1.
  server.on('secureConnection', (socket: TLSSocket) => {
    const bundle = credentials.bundle
    if (bundle === undefined) { refuseHandshake(socket, 'no-bundle', 'no trust bundle loaded'); return }
    if (socket.isSessionReused()) { refuseHandshake(socket, 'session-resumed', 'TLS session resumption is not accepted'); return }
    try {
      const peer = verifyPeer(socket, bundle)
      metrics.connections.inc()
      live.set(socket, peer)
      if (opts.onQuarantinedPeer !== undefined && opts.quarantine.current.holds(peer) !== undefined) opts.onQuarantinedPeer(peer)
      socket.once('close', () => { metrics.connections.dec(); live.delete(socket) })
      // An opaque TCP connection is never idle in the HTTP sense: its stage closes it at expiry, and says so.
      if (socket.alpnProtocol === TCP_ALPN) { tcp.accept(socket, peer); return }
      // Continuous verification: a kept-alive connection does not outlive its peer's certificate.
      // At expiry an idle connection is closed; a request in flight finishes, and the next request
      // on it is refused (see authorize), so the caller must handshake again with a fresh SVID.
      const expiry = setTimeout(() => {
        if (!requestInFlight(socket)) socket.destroy()
      }, Math.min(Math.max(0, peer.notAfter.getTime() - Date.now()), 2 ** 31 - 1))
      expiry.unref()
      socket.once('close', () => { clearTimeout(expiry) })
      if (socket.alpnProtocol === 'h2') h2.accept(socket, peer)
      else h1.accept(socket, peer)
    } catch (err) {
      const reason = (err as { reason?: string }).reason ?? 'not-svid'
      refuseHandshake(socket, reason, (err as Error).message)
    }
  })
  server.on('tlsClientError', (err, socket) => {
    const reason = handshakeFailureReason(err as NodeJS.ErrnoException)
    metrics.handshakeFailures.inc({ reason })
    tlsRefusalLog(suppressed => { logger.warn({ event: 'tls.refused', reason, detail: err.message, remote: socket.remoteAddress, ...(suppressed > 0 ? { suppressed } : {}) }, 'inbound TLS handshake failed') })
    // node:tls leaves a socket whose handshake failed (or timed out) to this listener.
    socket.destroy()
  })
  // Over --max-connections Node drops the connection silently: count and log it.
  server.on('drop', (data?: { remoteAddress?: string, remotePort?: number }) => {
    metrics.handshakeFailures.inc({ reason: 'max-connections' })
    tlsRefusalLog(suppressed => { logger.warn({ event: 'tls.refused', reason: 'max-connections', remote: `${data?.remoteAddress ?? '?'}:${data?.remotePort ?? '?'}`, ...(suppressed > 0 ? { suppressed } : {}) }, 'connection dropped: --max-connections reached') })
  })

  const judge = createJudge({ credentials, policy, quarantine: opts.quarantine, decisions, metrics, logger, ...(opts.onDecision === undefined ? {} : { onDecision: opts.onDecision }) })
  // Quarantine takes effect on what is already open too: kept-alive HTTP/1.1, HTTP/2 sessions, TCP.
  opts.quarantine.onChange(() => {
    const list = opts.quarantine.current
    metrics.quarantineEntries.set(list.size)
    const now = Date.now()
    const held = (peer: PeerIdentity): boolean => list.holds(peer, now) !== undefined
    let closed = tcp.cut(held, 'quarantined')
    if (closed > 0) metrics.quarantineCut.inc({ kind: 'tcp' }, closed)
    for (const [socket, peer] of live) {
      if (socket.alpnProtocol === TCP_ALPN || !held(peer)) continue
      metrics.quarantineCut.inc({ kind: socket.alpnProtocol === 'h2' ? 'h2' : 'http1' })
      socket.destroy()
      closed++
    }
    if (closed > 0) logger.warn({ event: 'quarantine.connections_closed', closed, revision: list.revision }, 'closed the live connections of quarantined callers')
  })
  const app = opts.app
  const sendTimeoutMs = opts.sendTimeoutMs ?? DEFAULT_SEND_TIMEOUT_MS
  const h1 = createH1Stage({ judge, app, upgradeProtocols: opts.upgradeProtocols, metrics, logger, maxHeaderSize: opts.maxHeaderSize, headersTimeoutMs: opts.headersTimeoutMs, requestTimeoutMs: opts.requestTimeoutMs, idleTimeoutMs: opts.idleTimeoutMs, sendTimeoutMs })
  const tcp = createTcpStage({ judge, upstreams: opts.tcpUpstreams ?? new Map(), preambleTimeoutMs: opts.headersTimeoutMs, connectTimeoutMs: opts.upstreamConnectTimeoutMs ?? 2000, idleTimeoutMs: opts.tcpIdleTimeoutMs ?? opts.idleTimeoutMs, metrics, logger })
  policy.onChange(() => { tcp.reevaluate() })
  const h2 = createH2Stage({ judge, app, maxConcurrentStreams: opts.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS, maxHeaderListSize: opts.maxHeaderSize, idleTimeoutMs: opts.idleTimeoutMs, sendTimeoutMs, metrics, logger })

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
      h1.closeIdle()
      const timer = setTimeout(() => { h1.closeAll() }, drainMs)
      await Promise.all([closed, h2.close(drainMs), tcp.close(drainMs)])
      clearTimeout(timer)
      h1.closeAll()
    }
  }
}
