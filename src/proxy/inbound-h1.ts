import type { TLSSocket } from 'node:tls'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from '../log.ts'
import type { PeerIdentity } from '../spiffe/peer.ts'
import type { DecisionFields } from '../audit/record.ts'
import type { ProxyMetrics } from './proxy-metrics.ts'
import type { Judge } from './judge.ts'
import type { Verdict } from './authorize.ts'
import { endToEndHeaders, hasBody, isGrpc } from './headers.ts'
import { forwardToApp, type AppUpstream } from './app-upstream.ts'
import { forwardUpgrade } from './forward-h1.ts'
import type { H1Connection } from './h1-server-connection.ts'
import { createH1Server, type H1ServerOptions } from './h1-server.ts'
import type { H1Request } from './h1-server-request.ts'
import type { H1Response } from './h1-server-response.ts'
import { allowedOffer, offeredProtocols } from './upgrade.ts'
import { refuseH1, refuseRaw } from './refusal.ts'
import { refusal } from '../error-body.ts'
import { BadRequestError, HeadersTooLargeError, MethodNotAllowedError, RequestTimeoutError, UpgradeNotAllowedError, UpstreamTimeoutError, UpstreamUnavailableError } from '../errors.ts'

// The HTTP/1.1 protocol stage: each caller connection's parser (h1-server-connection.ts) hands over
// a request (or an Upgrade, a CONNECT, a parse error or a deadline); its facts go to the judge, a
// refusal is answered here, an allowed request is forwarded. Exactly one decision line per request,
// whichever of these ends it.

/**
 * After a refusal, at most this much of the request's body is read (and discarded) so the response
 * can be read on a kept-alive connection; past it, or past DENIED_DRAIN_MS, the connection is closed.
 * A denied caller cannot hold a connection open by trickling a large body.
 */
export const DENIED_DRAIN_BYTES = 64 * 1024
export const DENIED_DRAIN_MS = 2000

const FORWARD_DROP = ['x-forwarded-client-cert', 'x-request-id']

// This stage's own refusals, made once (authorize.ts says why).
const APP_DOWN = new UpstreamUnavailableError()
const APP_SLOW = new UpstreamTimeoutError()
const NO_CONNECT = new MethodNotAllowedError('CONNECT is not supported inbound')
const NO_UPGRADE = new UpgradeNotAllowedError()
const MALFORMED = new BadRequestError('the request cannot be parsed as HTTP/1.1')
const HEADERS_TOO_LARGE = new HeadersTooLargeError()
const TOO_SLOW = new RequestTimeoutError()

/**
 * The request in flight on a connection, kept on its socket: a parse error in its body completes its
 * one decision line, and an expiring peer's connection is closed only when idle. (A property, not a
 * WeakMap and WeakSet entry per request: those cost GC time, issue 21.)
 */
const IN_FLIGHT = Symbol('gatehouse.inFlight')
interface InFlight { fields: DecisionFields, start: number }
type Tracked = object & { [IN_FLIGHT]?: InFlight | undefined }

/** Whether an HTTP/1.1 connection has a request in flight. */
export const requestInFlight = (socket: object): boolean => (socket as Tracked)[IN_FLIGHT] !== undefined

export interface H1StageOptions extends H1ServerOptions {
  judge: Judge
  app: AppUpstream
  upgradeProtocols: readonly string[]
  metrics: ProxyMetrics
  logger: Logger
}

export interface H1Stage {
  /** A verified peer's connection that chose HTTP/1.1 (or no ALPN). */
  accept: (socket: TLSSocket, peer: PeerIdentity) => void
  /** Shutdown: idle connections close now, the others after the answer in progress. */
  closeIdle: () => void
  closeAll: () => void
}

export function createH1Stage (o: H1StageOptions): H1Stage {
  const { judge, metrics, logger } = o
  const upgradeAllowed = new Set(o.upgradeProtocols.map(p => p.toLowerCase()))
  const peers = new WeakMap<object, PeerIdentity>()
  const peerOf = (socket: object): PeerIdentity | undefined => peers.get(socket)

  const verdictFor = (req: H1Request, problem = req.protocolProblem): Verdict => judge.verdict(peerOf(req.socket), {
    method: req.method,
    rawPath: req.url,
    requestIdHeader: req.headers['x-request-id'],
    protocolProblem: problem
  })

  const forwardHeaders = (req: H1Request, v: Extract<Verdict, { ok: true }>): Record<string, string | string[]> => {
    const headers = endToEndHeaders(req.headers, FORWARD_DROP) as Record<string, string | string[]>
    headers['x-forwarded-client-cert'] = v.xfcc
    headers['x-request-id'] = v.fields.requestId
    return headers
  }

  const request = (req: H1Request, res: H1Response, conn: H1Connection): void => {
    const start = performance.now()
    const socket = req.socket as Tracked
    const verdict = verdictFor(req)
    const current: InFlight = { fields: verdict.fields, start }
    socket[IN_FLIGHT] = current
    res.onFinish = () => { if (socket[IN_FLIGHT] === current) socket[IN_FLIGHT] = undefined }
    if (!verdict.ok) {
      // A body too large to drain cheaply ends the connection: say so, so the client does not reuse it.
      // So does a body the client was never invited to send (Expect: 100-continue): it may still come, or not.
      const close = verdict.close === true || req.expectsContinue || !conn.drainBody(req, DENIED_DRAIN_BYTES, DENIED_DRAIN_MS)
      refuseH1(res, verdict.refusal, close)
      judge.record(verdict.fields, verdict.refusal.status, start)
      return
    }
    const fields = verdict.fields
    // The body is invited only once the request is allowed and its admit line written (node:http
    // invited it before anyone had judged the request); the app never sees Expect (hop-level here).
    if (req.expectsContinue) res.writeContinue()
    const fr = { method: req.method, target: verdict.target, headers: forwardHeaders(req, verdict), body: req.body }
    forwardToApp(fr, res, isGrpc(req.headers), o.app, (out) => {
      if ((out.status === 502 || out.status === 504) && !res.headersSent) {
        refuseH1(res, refusal(out.status === 502 ? APP_DOWN : APP_SLOW, { requestId: fields.requestId }))
      }
      judge.record(fields, out.status, start, judge.outcomeError(out))
    })
  }

  const upgrade = (req: H1Request, socket: Duplex, head: Buffer): void => {
    // A raw socket is ours once it is handed over: without an error listener a client reset would crash the process.
    socket.on('error', () => { socket.destroy() })
    const start = performance.now()
    // llhttp reads an Upgrade request's body and then switches: the app would be told of a body that
    // never comes, and read the tunnel's first bytes as it. A handshake has no body (RFC 6455 4.1).
    const verdict = verdictFor(req, req.protocolProblem ?? (hasBody(req.headers) ? 'an Upgrade request must not carry a body' : undefined))
    if (!verdict.ok) { refuseRaw(socket, verdict.refusal); judge.record(verdict.fields, verdict.refusal.status, start); return }
    // Authorized, but only a listed protocol may become a tunnel (upgrade.ts says why).
    const offered = offeredProtocols(req.headers.upgrade as string | undefined)
    const relay = allowedOffer(offered, upgradeAllowed)
    if (relay.length === 0) {
      metrics.rejected.inc({ reason: 'upgrade' })
      const fields: DecisionFields = { ...verdict.fields, decision: 'deny', enforced: true, rule: null, reason: `upgrade-not-allowed: ${JSON.stringify(req.headers.upgrade ?? '')} is not on --upgrade-protocols (${[...upgradeAllowed].join(', ') || 'none'})`, error: 'upgrade-not-allowed' }
      refuseRaw(socket, refusal(NO_UPGRADE, { message: `upgrade to ${offered.join(', ') || '(none)'} is not relayed`, requestId: fields.requestId }))
      judge.record(fields, 400, start)
      return
    }
    forwardUpgrade(req.method, socket, head, verdict.target, { ...forwardHeaders(req, verdict), upgrade: relay.join(', ') }, relay, o.app, (out) => { judge.record(verdict.fields, out.status, start, judge.outcomeError(out)) })
  }

  // An inbound CONNECT asks the sidecar for a tunnel to somewhere else: never granted here (the
  // listener fronts one app), but answered and logged like any other refused request.
  const connect = (req: H1Request, socket: Duplex): void => {
    socket.on('error', () => { socket.destroy() })
    const start = performance.now()
    const fields = judge.denied(peerOf(req.socket), req.method, req.url, 'connect-not-supported: the inbound listener does not open tunnels')
    fields.error = 'connect-not-supported'
    metrics.rejected.inc({ reason: 'connect' })
    refuseRaw(socket, refusal(NO_CONNECT, { requestId: fields.requestId }))
    judge.record(fields, 405, start)
  }

  const clientError = (err: { code: string, bytesParsed?: number }, socket: Socket): void => {
    // Unparseable HTTP (smuggling attempts, oversized headers) or too slow: answer 400/431/408 and close; the app never sees it.
    const refused = err.code === 'HPE_HEADER_OVERFLOW' ? HEADERS_TOO_LARGE : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? TOO_SLOW : MALFORMED
    const status = refused.status
    metrics.rejected.inc({ reason: err.code })
    const peer = peerOf(socket)
    logger.warn({ event: 'http.rejected', code: err.code, caller: peer?.id ?? null }, 'malformed HTTP request refused')
    // A request already judged whose body then failed to parse: its one decision line ends with this
    // status (not a second line, and not the client-gone that the aborted forward would report).
    const current = (socket as Tracked)[IN_FLIGHT]
    const pending = current !== undefined && !judge.recorded(current.fields) ? current : undefined
    if (pending !== undefined) judge.record(pending.fields, status, pending.start, err.code)
    if (socket.writable && err.bytesParsed !== undefined) {
      // Rejected as malformed by the parser: still exactly one decision line (method and path unknown).
      const fields = peer !== undefined && pending === undefined ? judge.denied(peer, '', '', `bad-request: ${err.code}`) : undefined
      refuseRaw(socket, refusal(refused, { reason: refused === MALFORMED ? 'malformed' : undefined, requestId: (pending?.fields ?? fields)?.requestId }))
      if (fields !== undefined) {
        fields.error = err.code
        judge.record(fields, status, performance.now())
      }
    } else socket.destroy()
  }

  // The answer in progress ends as client-gone when the connection closes (its one decision line).
  const sendTimeout = (socket: Socket, waiting: number): void => {
    metrics.rejected.inc({ reason: 'send-timeout' })
    logger.warn({ event: 'http.send_timeout', caller: peerOf(socket)?.id ?? null, waitingBytes: waiting, sendTimeoutMs: o.sendTimeoutMs }, 'caller took none of its answer within --send-timeout; connection closed')
  }

  // Read but never answered (the connection closed for it): still one decision line, a refusal.
  const dropped = (req: H1Request, why: string): void => {
    const fields = judge.denied(peerOf(req.socket), req.method, req.url, `bad-request: ${why}`)
    fields.error = 'dropped'
    metrics.rejected.inc({ reason: 'upgrade' })
    judge.record(fields, 400, performance.now())
  }

  const server = createH1Server(o, { request, upgrade, connect, clientError, dropped, sendTimeout })
  return {
    accept (socket, peer) {
      peers.set(socket, peer)
      server.accept(socket)
    },
    closeIdle: server.closeIdle,
    closeAll: server.closeAll
  }
}
