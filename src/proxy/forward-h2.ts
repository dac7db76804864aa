import { connect, constants as h2, type ClientHttp2Session, type OutgoingHttpHeaders } from 'node:http2'
import type { Upstream } from './forward-h1.ts'
import { endToEndHeaders } from './headers.ts'
import type { ForwardOutcome, ForwardRequest, ResponseSink } from './exchange.ts'

// HTTP/2 forwarding. To the app: h2c with prior knowledge (what a gRPC server on localhost speaks): one
// multiplexed connection, made on first use and again after the app closes it (a restart fails only
// the calls in flight on the old one). Streams, trailers and trailers-only answers pass through as
// they are, so a gRPC status from the app reaches the caller intact.

export class H2cUpstream {
  private session: ClientHttp2Session | undefined
  private readonly authority: string
  private readonly connectTimeoutMs: number
  constructor (upstream: Upstream, connectTimeoutMs: number) {
    this.connectTimeoutMs = connectTimeoutMs
    this.authority = `http://${upstream.host.includes(':') ? `[${upstream.host}]` : upstream.host}:${upstream.port}`
  }

  /** The live connection, or a new one; a connection the app closed or sent GOAWAY on is never reused. */
  get (): ClientHttp2Session {
    const current = this.session
    if (current !== undefined && !current.closed && !current.destroyed) return current
    const session = connect(this.authority, { settings: { enablePush: false } })
    const forget = (): void => { if (this.session === session) this.session = undefined }
    // Streams see the error; the session's own 'error' must not crash the process.
    session.on('error', forget)
    session.on('close', forget)
    session.on('goaway', forget)
    const timer = setTimeout(() => { session.destroy(Object.assign(new Error(`connect to the app at ${this.authority} timed out`), { code: 'ETIMEDOUT' })) }, this.connectTimeoutMs)
    session.once('connect', () => { clearTimeout(timer) })
    session.once('close', () => { clearTimeout(timer) })
    this.session = session
    return session
  }

  async close (): Promise<void> {
    const s = this.session
    this.session = undefined
    if (s === undefined || s.destroyed) return
    await new Promise<void>(resolve => { s.close(resolve) })
  }
}

export interface H2ForwardOptions {
  responseTimeoutMs: number
  /** `http` to the app over h2c, `https` to another sidecar over mTLS. */
  scheme: 'http' | 'https'
}

/**
 * Sends the request as one stream on `session` and the answer back into `sink`: the app over h2c
 * (H2cUpstream) or another sidecar over the mTLS link (mesh-link.ts). Nothing is buffered.
 */
export function forwardH2 (fr: ForwardRequest, sink: ResponseSink, session: ClientHttp2Session, opts: H2ForwardOptions, done: (o: ForwardOutcome) => void): void {
  let finished = false
  const finish = (o: ForwardOutcome): void => { if (!finished) { finished = true; done(o) } }
  const { host, ...rest } = fr.headers
  const headers: OutgoingHttpHeaders = { ...rest, ':method': fr.method, ':path': fr.target, ':scheme': opts.scheme, ...(host === undefined ? {} : { ':authority': String(host) }) }
  const up = session.request(headers, { endStream: fr.body === null })
  let responded = false
  const timer = setTimeout(() => {
    up.close(h2.NGHTTP2_CANCEL)
    finish({ kind: 'upstream-timeout', status: 504, error: `app did not answer within ${opts.responseTimeoutMs} ms` })
  }, opts.responseTimeoutMs)
  sink.onAbort(() => {
    clearTimeout(timer)
    up.close(h2.NGHTTP2_CANCEL)
    finish({ kind: 'client-gone', status: sink.headersSent ? sink.statusCode : 499 })
  })
  if (fr.body !== null) {
    fr.body.pipe(up)
    fr.body.on('error', () => { up.close(h2.NGHTTP2_CANCEL) })
  }
  up.on('response', (upHeaders, flags) => {
    clearTimeout(timer)
    responded = true
    const end = (flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0
    sink.head(Number(upHeaders[':status']), endToEndHeaders(upHeaders), { end, trailers: true, bodyLater: true })
    if (end) return
    up.on('data', (chunk: Buffer) => { if (!sink.write(chunk)) up.pause() })
    sink.onDrain(() => { up.resume() })
    up.on('end', () => { sink.end() })
  })
  up.on('trailers', (trailers) => { sink.trailers(endToEndHeaders(trailers)) })
  // Settled in 'close', from rstCode and what was sent; the error only says why (ECONNREFUSED...).
  let failure: string | undefined
  up.on('error', (err: NodeJS.ErrnoException) => { failure = (err.cause as { code?: string } | undefined)?.code ?? err.code ?? err.message })
  up.on('close', () => {
    clearTimeout(timer)
    if (up.rstCode === h2.NGHTTP2_NO_ERROR && responded) { finish({ kind: 'response', status: sink.statusCode }); return }
    const error = failure ?? (up.rstCode === undefined || up.rstCode === h2.NGHTTP2_NO_ERROR ? 'connection to the app closed' : `app reset the stream (HTTP/2 error ${up.rstCode})`)
    if (sink.headersSent) { sink.destroy(); finish({ kind: 'upstream-reset', status: sink.statusCode, error }); return }
    // REFUSED_STREAM, or a stream above the last-stream-id of the peer's GOAWAY (nghttp2 closes those
    // with the same code): the peer never processed it.
    finish({ kind: 'upstream-unavailable', status: 502, error, ...(up.rstCode === h2.NGHTTP2_REFUSED_STREAM ? { refused: true as const } : {}) })
  })
}
