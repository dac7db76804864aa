import type { OutgoingHttpHeaders } from 'node:http'
import { constants as h2, type ServerHttp2Stream } from 'node:http2'
import type { Readable } from 'node:stream'

// One authorized request handed to a forwarder (forward-h1.ts over HTTP/1.1, forward-h2.ts over
// h2c), and where its response goes: a ResponseSink hides whether the caller came over HTTP/1.1 or
// HTTP/2, so each forwarder is written once for both.

export interface ForwardRequest {
  method: string
  /** Normalized origin-form target. */
  target: string
  /** End-to-end headers for the app, `host` included (from :authority for an HTTP/2 caller). */
  headers: OutgoingHttpHeaders
  /** The request body, or null when the request has none. */
  body: Readable | null
}

export type ForwardOutcome =
  | { kind: 'response', status: number }
  | { kind: 'upgraded', status: 101 }
  | { kind: 'upstream-unavailable', status: 502, error: string, cause?: Error, /** the peer refused the stream unprocessed (RFC 9113 8.7): safe to send again */ refused?: true }
  | { kind: 'upstream-timeout', status: 504, error: string }
  | { kind: 'upstream-reset', status: number, error: string }
  | { kind: 'client-gone', status: number }

export interface ResponseSink {
  readonly headersSent: boolean
  readonly statusCode: number
  /**
   * Starts the response. `end`: nothing follows (for HTTP/2 a trailers-only answer, gRPC's error
   * shape). `trailers`: the app may send trailers (h2c upstream). `bodyLater`: the body comes in a
   * later tick (an HTTP/2 stream's DATA reaches JavaScript after its 'response').
   */
  head: (status: number, headers: OutgoingHttpHeaders, opts: { end: boolean, trailers: boolean, bodyLater?: boolean }) => void
  /** A piece of the body; false: the caller's side is full, wait for onDrain. */
  write: (chunk: Buffer) => boolean
  /** The body is complete (trailers, if any, follow it). */
  end: () => void
  /** `fn` runs each time the caller's side can take more after a write returned false. */
  onDrain: (fn: () => void) => void
  /** The app's trailers (grpc-status): sent after the body. */
  trailers: (headers: OutgoingHttpHeaders) => void
  /** Cuts the response (the app failed after its headers were sent). */
  destroy: () => void
  /** `fn` runs once if the caller goes away before the response is complete. */
  onAbort: (fn: () => void) => void
}

/** The sink answering on a stream, for the stream's own listeners (module functions, not closures per stream). */
const SINK = Symbol('gatehouse.h2Sink')
type SinkStream = ServerHttp2Stream & { [SINK]?: H2Sink }

function sendPendingTrailers (this: SinkStream): void { this.sendTrailers(this[SINK]?.pending ?? {}) }
// An HTTP/2 stream can close before 'finish' is emitted: a response we ended, on a stream not reset, is complete.
function closedEarly (this: SinkStream): void { if (!this.writableEnded || this.rstCode !== h2.NGHTTP2_NO_ERROR) this[SINK]?.abortFn?.() }

/** The answer to an HTTP/2 caller: one object per stream, as the HTTP/1.1 sink (h1-server-response.ts). */
export class H2Sink implements ResponseSink {
  pending: OutgoingHttpHeaders = {}
  abortFn: (() => void) | undefined
  private status = 0
  // The caller reset the stream while the app was answering ('close' has not fired yet): the
  // answer goes nowhere, and onAbort reports the caller gone.
  private gone = false
  private readonly stream: SinkStream
  constructor (stream: ServerHttp2Stream) {
    this.stream = stream
    this.stream[SINK] = this
  }

  get headersSent (): boolean { return this.stream.headersSent }
  get statusCode (): number { return this.status }

  /** `headers` becomes the response's (a forwarder builds it for this answer alone). */
  head (status: number, headers: OutgoingHttpHeaders, opts: { end: boolean, trailers: boolean }): void {
    this.status = status
    const stream = this.stream
    if (stream.destroyed || stream.closed) { this.gone = true; return }
    const waitForTrailers = opts.trailers && !opts.end
    if (waitForTrailers) stream.on('wantTrailers', sendPendingTrailers)
    headers[':status'] = status
    stream.respond(headers, { endStream: opts.end, waitForTrailers })
  }

  write (chunk: Buffer): boolean { return this.gone || this.stream.destroyed ? true : this.stream.write(chunk) }
  end (): void { if (!this.gone && !this.stream.destroyed) this.stream.end() }
  onDrain (fn: () => void): void { this.stream.on('drain', fn) }
  trailers (t: OutgoingHttpHeaders): void { this.pending = t }
  destroy (): void { if (!this.stream.destroyed) this.stream.close(h2.NGHTTP2_INTERNAL_ERROR) }
  // 'close' and 'wantTrailers' come once per stream: on(), without once()'s wrapper per stream. The
  // latest forwarder's is the one told (as H1Response does): a refused stream sent again (outbound.ts)
  // registers twice on one sink, and the listener once.
  onAbort (fn: () => void): void {
    if (this.abortFn === undefined) this.stream.on('close', closedEarly)
    this.abortFn = fn
  }
}
