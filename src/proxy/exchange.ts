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
  | { kind: 'upstream-unavailable', status: 502, error: string, cause?: Error }
  | { kind: 'upstream-timeout', status: 504, error: string }
  | { kind: 'upstream-reset', status: number, error: string }
  | { kind: 'client-gone', status: number }

export interface ResponseSink {
  readonly headersSent: boolean
  readonly statusCode: number
  /**
   * Starts the response. `end`: nothing follows (for HTTP/2 a trailers-only answer, gRPC's error
   * shape). `trailers`: the app may send trailers (h2c upstream).
   */
  head: (status: number, headers: OutgoingHttpHeaders, opts: { end: boolean, trailers: boolean }) => void
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

export function h2Sink (stream: ServerHttp2Stream): ResponseSink {
  let pending: OutgoingHttpHeaders = {}
  let status = 0
  // The caller reset the stream while the app was answering ('close' has not fired yet): the
  // answer goes nowhere, and onAbort reports the caller gone.
  let gone = false
  return {
    get headersSent () { return stream.headersSent },
    get statusCode () { return status },
    head (s, headers, opts) {
      status = s
      if (stream.destroyed || stream.closed) { gone = true; return }
      const waitForTrailers = opts.trailers && !opts.end
      if (waitForTrailers) stream.once('wantTrailers', () => { stream.sendTrailers(pending) })
      stream.respond({ ...headers, ':status': s }, { endStream: opts.end, waitForTrailers })
    },
    write: (chunk) => gone || stream.destroyed ? true : stream.write(chunk),
    end () { if (!gone && !stream.destroyed) stream.end() },
    onDrain (fn) { stream.on('drain', fn) },
    trailers (t) { pending = t },
    destroy () { if (!stream.destroyed) stream.close(h2.NGHTTP2_INTERNAL_ERROR) },
    // An HTTP/2 stream can close before 'finish' is emitted: a response we ended, on a stream not reset, is complete.
    onAbort (fn) { stream.once('close', () => { if (!stream.writableEnded || stream.rstCode !== h2.NGHTTP2_NO_ERROR) fn() }) }
  }
}
