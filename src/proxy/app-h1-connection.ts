import { connect, type Socket } from 'node:net'
import { HTTPParser, releaseParser, type NativeParser } from './llhttp.ts'
import { requestHead, RequestHeadError, type AppRequest, type RequestHead } from './app-h1-request.ts'

// One kept-alive HTTP/1.1 connection to the app (app-h1-pool.ts keeps them), with Node's own llhttp
// binding (llhttp.ts) reading the app's responses. One exchange
// at a time, no pipelining; a response belongs to the exchange it answers or the connection is
// dropped: bytes from the app with no exchange waiting for them (a second answer, leftovers on an
// idle connection) end the connection rather than reach the next caller.

const { kOnMessageBegin, kOnHeaders, kOnHeadersComplete, kOnBody, kOnMessageComplete } = HTTPParser

/**
 * What went wrong talking to the app, for the decision line's error (not a GH_ error: the caller gets
 * GH_UPSTREAM_UNAVAILABLE or GH_UPSTREAM_TIMEOUT). `code`: a system code (ECONNREFUSED...), an llhttp
 * code (HPE_...), or INVALID_HEADER_VALUE, INVALID_RESPONSE, BODY_LENGTH_MISMATCH, UNEXPECTED_UPGRADE, RESPONSE_TIMEOUT, POOL_CLOSED.
 */
export class AppConnectionError extends Error {
  readonly code: string
  /** The app did not start its answer within the deadline (504, not 502). */
  readonly timeout: boolean
  constructor (code: string, message: string, timeout = false, cause?: Error) {
    super(message, cause === undefined ? undefined : { cause })
    this.code = code
    this.timeout = timeout
  }
}

/** One exchange's callbacks, in order: onStart, onHeaders, onData*, then onComplete or onError (exactly one). */
export interface AppExchangeHandler {
  /** `abort` cuts this exchange (the caller went away); no callback follows it. */
  onStart: (abort: () => void) => void
  /** The final response head (1xx are hop-level and not passed on), names and values alternating. */
  onHeaders: (status: number, rawHeaders: string[], resume: () => void) => void
  /** false: stop reading the app until `resume` (from onHeaders) is called. */
  onData: (chunk: Buffer) => boolean
  onComplete: () => void
  onError: (err: AppConnectionError) => void
}

// Methods a stale kept-alive connection may be retried for: safe ones (RFC 9110 9.2.1). A bodiless
// POST may have been acted on by an app that then dropped the connection without answering.
const RETRIABLE = new Set(['GET', 'HEAD', 'OPTIONS'])
const NO_HEADERS: string[] = []

export class Exchange {
  readonly req: AppRequest
  readonly handler: AppExchangeHandler
  /** Response headers collected across reads (llhttp flushes them in parts when they span packets). */
  partial: string[] = NO_HEADERS
  /** The final (>= 200) response head has arrived. */
  headed = false
  /** Bytes of the request have been written. */
  written = false
  /** The request body is fully written (or there is none). */
  sent = false
  done = false
  /** Tried once more on a fresh connection after a stale kept-alive one failed. */
  retried = false
  constructor (req: AppRequest, handler: AppExchangeHandler) {
    this.req = req
    this.handler = handler
  }
}

/** What a connection needs from the pool that keeps it. */
export interface ConnectionOwner {
  readonly host: string
  readonly port: number
  readonly authority: string
  readonly responseTimeoutMs: number
  readonly connectTimeoutMs: number
  /** The connection can take the next exchange. */
  idle: (c: AppConnection) => void
  /** The connection closed. */
  gone: (c: AppConnection) => void
  /** Sends `x` on another connection (a stale connection's retry). */
  dispatchExchange: (x: Exchange) => void
}

/**
 * A request body we stop sending (the exchange ended first) keeps flowing, into nothing, so the
 * caller's server can read it to its end and answer on a kept-alive connection.
 */
function letBodyGo (x: Exchange): void {
  if (x.req.body !== null && !x.sent) x.req.body.resume()
}

export class AppConnection {
  readonly socket: Socket
  private readonly owner: ConnectionOwner
  private readonly parser: NativeParser
  /** The exchange on this connection, if any. */
  private current: Exchange | undefined
  /** Has answered at least one request (a failure before any answer byte may be a stale connection). */
  private reused = false
  /** Bytes of the current response have arrived. */
  private answered = false
  /** The current response is complete; the connection is released once the parser has returned. */
  private completed = false
  private keepAlive = true
  closed = false
  idleSince = 0
  /** The deadline for the app's response head, re-armed per request (one timer per connection). */
  private readonly timer: NodeJS.Timeout
  private connectTimer: NodeJS.Timeout | undefined
  private error: AppConnectionError | undefined

  /** `socket`: one the owner has connected (and verified) itself; without it, a TCP connection to the owner's host:port. */
  constructor (owner: ConnectionOwner, given?: Socket) {
    this.owner = owner
    const parser = new HTTPParser()
    this.parser = parser
    parser.initialize(HTTPParser.RESPONSE, {})
    // A response begins with no exchange waiting for it (a second answer, or bytes on an idle connection): drop the connection.
    parser[kOnMessageBegin] = () => {
      const x = this.current
      if (x === undefined || x.done) { this.current = undefined; this.keepAlive = false; this.destroy() }
    }
    parser[kOnHeaders] = (headers: string[]) => { this.onHeadersPart(headers) }
    parser[kOnHeadersComplete] = (_maj: number, _min: number, headers: string[] | undefined, _m: unknown, _u: unknown, status: number, _msg: string, upgrade: boolean, keepAlive: boolean) => this.onHead(headers, status, upgrade, keepAlive)
    parser[kOnBody] = (chunk: Buffer) => { this.onBody(chunk) }
    parser[kOnMessageComplete] = () => { this.onMessageComplete() }
    this.timer = setTimeout(() => { this.onTimer() }, owner.responseTimeoutMs)
    this.timer.unref()
    const socket = given ?? connect({ host: owner.host, port: owner.port, noDelay: true })
    this.socket = socket
    if (given === undefined) {
      this.connectTimer = setTimeout(() => {
        this.error = new AppConnectionError('ETIMEDOUT', `connect to the app timed out after ${owner.connectTimeoutMs} ms`)
        this.socket.destroy()
      }, owner.connectTimeoutMs)
      socket.on('connect', () => { clearTimeout(this.connectTimer); this.connectTimer = undefined })
    }
    socket.on('data', (d: Buffer) => { this.onData(d) })
    socket.on('end', () => { this.onEnd() })
    socket.on('error', (err: NodeJS.ErrnoException) => { this.error ??= new AppConnectionError(err.code ?? 'ECONNRESET', err.message) })
    socket.on('close', () => { this.onClose() })
  }

  /** Whether the connection can take an exchange (the pool may hold one the app has just closed). */
  get usable (): boolean { return !this.closed && !this.socket.destroyed }

  /** Sends `x` on this connection (a fresh one, or an idle one taken from the pool). */
  start (x: Exchange): void {
    this.current = x
    this.answered = false
    let framing: RequestHead
    try { framing = requestHead(x.req, this.owner.authority) } catch (err) {
      this.current = undefined
      this.release()
      x.done = true
      x.handler.onError(new AppConnectionError((err as RequestHeadError).code, (err as Error).message))
      return
    }
    x.handler.onStart(() => {
      if (this.current !== x) return
      this.current = undefined
      // Nothing written yet (a caller gone while it waited for a connection): the connection is as good as idle.
      if (x.written) this.destroy()
      else this.release()
    })
    if (this.current !== x) return
    x.written = true
    this.timer.refresh()
    const socket = this.socket
    const body = x.req.body
    if (body === null) { x.sent = true; socket.write(framing.head, 'latin1'); return }
    socket.write(framing.head, 'latin1')
    this.sendBody(x, body, framing)
  }

  private sendBody (x: Exchange, body: NonNullable<AppRequest['body']>, framing: RequestHead): void {
    const socket = this.socket
    let left = framing.length
    body.on('data', (chunk: Buffer) => {
      if (this.current !== x) return
      let ok: boolean
      if (framing.chunked) {
        if (chunk.length === 0) return
        socket.cork()
        socket.write(`${chunk.length.toString(16)}\r\n`)
        socket.write(chunk)
        ok = socket.write('\r\n')
        socket.uncork()
      } else {
        left -= chunk.length
        if (left < 0) { this.fail(new AppConnectionError('BODY_LENGTH_MISMATCH', 'the request body is longer than its content-length')); return }
        ok = socket.write(chunk)
      }
      // The deadline is for the app's answer: an upload in progress does not use it up.
      this.timer.refresh()
      if (!ok) { body.pause(); socket.once('drain', () => { body.resume() }) }
    })
    body.once('end', () => {
      if (this.current !== x) return
      if (framing.chunked) socket.write('0\r\n\r\n')
      else if (left !== 0) { this.fail(new AppConnectionError('BODY_LENGTH_MISMATCH', 'the request body is shorter than its content-length')); return }
      x.sent = true
      this.timer.refresh()
    })
    // A caller gone mid-body: its exchange is aborted by the sink; this only keeps the stream from throwing.
    body.on('error', () => {})
  }

  private onHeadersPart (headers: string[]): void {
    const x = this.current
    // Trailers (after a chunked body) come here too: not relayed (HTTP/1.1 callers rarely ask for them).
    if (x === undefined || x.headed) return
    x.partial = x.partial === NO_HEADERS ? headers : x.partial.concat(headers)
  }

  private onHead (headers: string[] | undefined, status: number, upgrade: boolean, keepAlive: boolean): number {
    const x = this.current
    if (x === undefined || x.done) { this.destroy(); return 1 } // an answer nobody asked for
    if (upgrade || status === 101) { this.fail(new AppConnectionError('UNEXPECTED_UPGRADE', 'the app switched protocols on a plain request')); return 1 }
    let raw = headers ?? NO_HEADERS
    if (x.partial !== NO_HEADERS) { raw = headers === undefined ? x.partial : x.partial.concat(headers); x.partial = NO_HEADERS }
    // 1xx (100 Continue, 103 Early Hints) are hop-level: our own server answered Expect.
    if (status < 200) return 1
    x.headed = true
    this.keepAlive = keepAlive
    x.handler.onHeaders(status, raw, this.resumeFn)
    return x.req.method === 'HEAD' || status === 204 || status === 304 ? 1 : 0
  }

  // One function per connection, not per exchange: a late resume from an exchange already over only
  // un-pauses a connection that is reading anyway.
  private readonly resumeFn = (): void => { this.socket.resume() }

  private onBody (chunk: Buffer): void {
    const x = this.current
    if (x === undefined || x.done) return
    if (!x.handler.onData(chunk)) this.socket.pause()
  }

  private onMessageComplete (): void {
    const x = this.current
    if (x === undefined || !x.headed || x.done) return // a 1xx ends here: the final answer follows
    x.done = true
    this.reused = true
    x.handler.onComplete()
    // The body is still being sent: the app answered early. The connection cannot carry another
    // request until it is, and an app that answered early rarely wants the rest: close it.
    if (!x.sent) { this.current = undefined; letBodyGo(x); this.destroy(); return }
    // Released only after execute() returns: bytes after this response in the same read must meet
    // kOnMessageBegin with no exchange (and drop the connection), never the next exchange's.
    this.completed = true
  }

  /** Back to the pool, reading again (a last write into a full caller may have paused it), unless it cannot be reused. */
  private release (): void {
    this.current = undefined
    if (!this.keepAlive || !this.usable) { this.destroy(); return }
    this.socket.resume()
    this.owner.idle(this)
  }

  private onData (d: Buffer): void {
    this.answered = true
    let r: number | Error
    // The handler runs inside execute(): a head the caller's side refuses to write fails this
    // exchange, never the process.
    try { r = this.parser.execute(d) } catch (err) { r = new AppConnectionError('INVALID_RESPONSE', `the app's response cannot be relayed: ${(err as Error).message}`) }
    if (r instanceof Error) {
      const code = (r as Error & { code?: string }).code ?? 'HPE_INVALID'
      this.completed = false
      this.fail(r instanceof AppConnectionError ? r : new AppConnectionError(code, `the app's response cannot be parsed (${code})`))
      return
    }
    if (this.completed) { this.completed = false; this.release() }
  }

  private onEnd (): void {
    this.keepAlive = false
    // A response framed by the end of the connection is complete now.
    let r: Error | undefined
    try { r = this.parser.finish() } catch (err) { r = err as Error }
    if (this.completed) { this.completed = false; this.current = undefined }
    if (r instanceof Error && this.current !== undefined) this.error = new AppConnectionError('ECONNRESET', 'the app closed the connection mid-response')
    this.socket.destroy()
  }

  private onTimer (): void {
    const x = this.current
    if (x === undefined || x.headed || !x.written) return
    this.fail(new AppConnectionError('RESPONSE_TIMEOUT', `app did not answer within ${this.owner.responseTimeoutMs} ms`, true))
  }

  /** Ends the current exchange with `err` and drops the connection. */
  private fail (err: AppConnectionError): void {
    const x = this.current
    this.current = undefined
    this.destroy()
    if (x !== undefined && !x.done) { x.done = true; letBodyGo(x); x.handler.onError(err) }
  }

  private onClose (): void {
    this.closed = true
    clearTimeout(this.timer)
    clearTimeout(this.connectTimer)
    releaseParser(this.parser)
    this.owner.gone(this)
    const x = this.current
    if (x === undefined || x.done) return
    this.current = undefined
    // A kept-alive connection the app closed just as we sent on it: no answer byte came, so a safe,
    // bodiless request is sent once more on a fresh connection.
    if (this.reused && !this.answered && x.req.body === null && RETRIABLE.has(x.req.method) && !x.retried) {
      x.retried = true
      this.owner.dispatchExchange(x)
      return
    }
    x.done = true
    letBodyGo(x)
    x.handler.onError(this.error ?? new AppConnectionError('ECONNRESET', 'the app closed the connection'))
  }

  destroy (): void { this.socket.destroy() }
}
