import { createServer, constants as h2, type Http2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import type { TLSSocket } from 'node:tls'
import type { Logger } from '../log.ts'
import type { PeerIdentity } from '../spiffe/peer.ts'
import type { ProxyMetrics } from './proxy-metrics.ts'
import type { Judge } from './judge.ts'
import { endToEndHeaders, h2HeaderProblem, isGrpc } from './headers.ts'
import { H2Sink } from './exchange.ts'
import { forwardToApp, type AppUpstream } from './app-upstream.ts'
import { refuseH2 } from './refusal.ts'
import { SendDeadline, sweepInterval } from './send-deadline.ts'
import { refusal } from '../error-body.ts'
import { HeadersTooLargeError, MethodNotAllowedError, UpstreamTimeoutError, UpstreamUnavailableError } from '../errors.ts'

// The HTTP/2 protocol stage: a connection that chose ALPN h2 (its peer already verified by the TLS
// stage) becomes a session, and every stream on it is one request: judged on its own, with the same
// facts, rules and decision line as an HTTP/1.1 request, and forwarded on its own.
//
// HTTP/2's own attack surface is bounded here and in nghttp2 (see docs/threat-model.md):
// maxConcurrentStreams caps streams per connection (before the caller acknowledges our SETTINGS the
// excess is refused with REFUSED_STREAM, after it the connection ends with GOAWAY PROTOCOL_ERROR);
// maxHeaderListSize caps a decoded header block (nghttp2 resets the stream once SETTINGS are
// acknowledged; before that, headerListSize() below answers 431); nghttp2 refuses malformed
// pseudo-headers and connection-specific headers, drops fields with CR, LF or NUL, and ends RST_STREAM
// floods (rapid reset, CVE-2023-44487) and CONTINUATION floods with GOAWAY; and a stream is forwarded
// only after the frames that arrived with it have been read, so one opened and reset at once never
// reaches the app.

/** Streams one caller may have open on one connection: RFC 9113 suggests at least 100; so do Envoy and nginx. */
export const DEFAULT_MAX_CONCURRENT_STREAMS = 100

export interface H2StageOptions {
  judge: Judge
  app: AppUpstream
  maxConcurrentStreams: number
  maxHeaderListSize: number
  idleTimeoutMs: number
  /** A caller that takes none of a stream's answer for this long has the stream cancelled (send-deadline.ts); 0: no deadline. */
  sendTimeoutMs: number
  metrics: ProxyMetrics
  logger: Logger
}

export interface H2Stage {
  /** Takes over a verified TLS connection that negotiated h2. */
  accept: (socket: TLSSocket, peer: PeerIdentity) => void
  /** GOAWAY to every session (in-flight streams finish); after `drainMs`, whatever is left is cut. */
  close: (drainMs: number) => Promise<void>
}

const FORWARD_DROP = ['x-forwarded-client-cert', 'x-request-id', 'host']

/** A stream's 'error' is a reset by either side; its outcome is settled by the forwarder or the refusal. */
const ignoreResets = (): void => {}

// This stage's own refusals, made once (authorize.ts says why).
const APP_DOWN = new UpstreamUnavailableError()
const APP_SLOW = new UpstreamTimeoutError()
const NO_CONNECT = new MethodNotAllowedError('CONNECT is not supported inbound')
const HEADERS_TOO_LARGE = new HeadersTooLargeError()

/** A header list's size as RFC 9113 6.5.2 counts it: name + value + 32 per field. */
function headerListSize (raw: string[]): number {
  let size = 0
  for (let i = 0; i < raw.length; i++) size += raw[i]!.length + (i % 2 === 0 ? 32 : 0)
  return size
}

export function createH2Stage (o: H2StageOptions): H2Stage {
  const { judge, metrics, logger } = o
  const server = createServer({
    settings: { maxConcurrentStreams: o.maxConcurrentStreams, maxHeaderListSize: o.maxHeaderListSize, enablePush: false },
    // Node's own bound on a header block, kept equal to the advertised one.
    maxHeaderListPairs: 256,
    maxSendHeaderBlockLength: o.maxHeaderListSize * 4
  })
  const sessions = new Set<Http2Session>()
  const peers = new WeakMap<Http2Session, PeerIdentity>()
  /** Set for the duration of accept(): 'session' fires synchronously inside it. */
  let accepting: PeerIdentity | undefined
  // The streams being answered, each with its send deadline: a caller's flow-control window held
  // at zero (or a connection it stopped reading) would otherwise hold an app connection per stream.
  const sending = new Map<ServerHttp2Stream, SendDeadline>()
  let sweep: NodeJS.Timeout | undefined
  if (o.sendTimeoutMs > 0) {
    sweep = setInterval(() => {
      const now = performance.now()
      for (const [stream, deadline] of sending) {
        if (!deadline.expired(now, stream.writableLength)) continue
        sending.delete(stream)
        metrics.rejected.inc({ reason: 'send-timeout' })
        logger.warn({ event: 'http.send_timeout', protocol: 'h2', caller: peers.get(stream.session as Http2Session)?.id ?? null, waitingBytes: stream.writableLength, sendTimeoutMs: o.sendTimeoutMs }, 'caller took none of its answer within --send-timeout; stream cancelled')
        // RST_STREAM(CANCEL): the forwarder sees the caller gone, aborts the app's side, and the decision line says client-gone.
        stream.close(h2.NGHTTP2_CANCEL)
      }
    }, sweepInterval([o.sendTimeoutMs]))
    sweep.unref()
  }

  server.on('session', (session: Http2Session) => {
    const peer = accepting
    if (peer === undefined) { session.destroy(); return }
    peers.set(session, peer)
    sessions.add(session)
    session.on('error', (err: NodeJS.ErrnoException) => { logger.debug({ event: 'h2.session_error', code: err.code, caller: peer.id }, 'HTTP/2 connection error') })
    session.on('frameError', (type: number, code: number) => { logger.debug({ event: 'h2.frame_error', type, code, caller: peer.id }, 'HTTP/2 frame could not be sent') })
    // An idle connection is closed with GOAWAY (streams in flight finish); so is one whose peer
    // certificate expires (continuous verification: new streams would be refused anyway).
    session.setTimeout(o.idleTimeoutMs, () => { session.close() })
    const expiry = setTimeout(() => { session.close() }, Math.min(Math.max(0, peer.notAfter.getTime() - Date.now()), 2 ** 31 - 1))
    expiry.unref()
    session.once('close', () => { sessions.delete(session); clearTimeout(expiry) })
    session.on('goaway', (code: number) => {
      if (code !== h2.NGHTTP2_NO_ERROR) logger.warn({ event: 'h2.goaway', code, caller: peer.id }, 'HTTP/2 connection ended with an error')
    })
  })

  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
    const start = performance.now()
    const peer = peers.get(stream.session as Http2Session)
    const grpc = isGrpc(headers)
    stream.on('error', ignoreResets)
    const method = String(headers[':method'] ?? '')
    const rawPath = String(headers[':path'] ?? '')
    if (method === 'CONNECT') {
      // Extended CONNECT (RFC 8441, WebSocket over HTTP/2) is not offered; plain CONNECT asks for a tunnel.
      const fields = judge.denied(peer, method, String(headers[':authority'] ?? ''), 'connect-not-supported: the inbound listener does not open tunnels')
      fields.error = 'connect-not-supported'
      metrics.rejected.inc({ reason: 'connect' })
      refuseH2(stream, refusal(NO_CONNECT, { requestId: fields.requestId }), grpc)
      judge.record(fields, 405, start)
      return
    }
    // nghttp2 applies maxHeaderListSize only once the caller has acknowledged our SETTINGS: every
    // caller's first flight (and an attacker who never acknowledges) is bounded here instead.
    if (headerListSize(rawHeaders) > o.maxHeaderListSize) {
      const fields = judge.denied(peer, method, rawPath, `header-list-too-large: over ${o.maxHeaderListSize} bytes`)
      fields.error = 'header-list-too-large'
      metrics.rejected.inc({ reason: 'header-list-too-large' })
      refuseH2(stream, refusal(HEADERS_TOO_LARGE, { message: `the header list is over ${o.maxHeaderListSize} bytes`, requestId: fields.requestId }), grpc)
      if (!stream.readableEnded) stream.close(h2.NGHTTP2_NO_ERROR)
      judge.record(fields, 431, start)
      return
    }
    const problem = h2HeaderProblem(headers)
    const verdict = judge.verdict(peer, { method, rawPath, requestIdHeader: headers['x-request-id'], ...(problem === undefined ? {} : { protocolProblem: problem }) })
    if (!verdict.ok) {
      refuseH2(stream, verdict.refusal, grpc)
      // The rest of a refused request's body is not read: RST_STREAM(NO_ERROR) once the answer is out (RFC 9113 8.1).
      if (!stream.readableEnded) stream.close(h2.NGHTTP2_NO_ERROR)
      if (verdict.refusal.status === 401) (stream.session as Http2Session).close()
      judge.record(verdict.fields, verdict.refusal.status, start)
      return
    }
    const fields = verdict.fields
    const out = endToEndHeaders(headers, FORWARD_DROP)
    out.host = String(headers[':authority'] ?? headers.host ?? '')
    out['x-forwarded-client-cert'] = verdict.xfcc
    out['x-request-id'] = fields.requestId
    // The body is the stream's readable side itself: neither forwarder destroys a body it has sent
    // (that would reset the response too).
    const fr = { method, target: verdict.target, headers: out, body: (flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0 ? null : stream }
    // Forwarded once the frames read with this HEADERS are processed: a stream its caller reset at
    // once (rapid reset) is closed by then and never reaches the app.
    setImmediate(() => {
      if (stream.closed || stream.destroyed) { judge.record(fields, 499, start, 'client-gone'); return }
      if (sweep !== undefined) sending.set(stream, new SendDeadline(o.sendTimeoutMs))
      forwardToApp(fr, new H2Sink(stream), grpc, o.app, (outcome) => {
        sending.delete(stream)
        if ((outcome.status === 502 || outcome.status === 504) && !stream.headersSent) {
          refuseH2(stream, refusal(outcome.status === 502 ? APP_DOWN : APP_SLOW, { requestId: fields.requestId }), grpc)
        }
        judge.record(fields, outcome.status, start, judge.outcomeError(outcome))
      })
    })
  })

  return {
    accept (socket, peer) {
      accepting = peer
      try { server.emit('connection', socket) } finally { accepting = undefined }
    },
    async close (drainMs) {
      clearInterval(sweep)
      const all = [...sessions]
      for (const s of all) s.close()
      const timer = setTimeout(() => { for (const s of all) s.destroy() }, drainMs)
      await Promise.all(all.map(async s => { if (!s.destroyed) await new Promise(resolve => s.once('close', resolve)) }))
      clearTimeout(timer)
    }
  }
}
