import { connect, type Socket } from 'node:net'
import { createRequire } from 'node:module'
import type { OutgoingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'

// Kept-alive HTTP/1.1 connections to the app on localhost, with Node's own llhttp binding (the parser
// node:http uses, from `_http_common`) reading the app's responses. Issue 21 measured the app side as
// the dearer half of a Node proxy: node:https in front of these raw sockets cost 0.76 CPU s per 10k
// requests where node:https in front of node:http's client cost 1.38 (same run, bench/README.md), and
// undici's Pool sat between the two. What undici gave us is kept: request bodies re-framed
// (content-length kept, otherwise chunked), hop-by-hop headers never sent, a deadline for the
// response head (504), connect failures and resets as errors (502), a stale kept-alive connection
// retried once, no pipelining.

interface NativeParser {
  initialize: (type: number, resource: object, maxHeaderSize?: number, lenient?: number) => void
  execute: (data: Buffer) => number | Error
  finish: () => Error | undefined
  remove: () => void
  free: () => void
  [callback: number]: unknown
}
interface HttpCommon {
  HTTPParser: (new () => NativeParser) & { RESPONSE: number, kOnHeaders: number, kOnHeadersComplete: number, kOnBody: number, kOnMessageComplete: number }
}
// An internal module Node keeps for compatibility (http-parser-js and others replace it); pinned with
// Node itself (package.json engines). Checked at load: a Node without it fails at start, not mid-request.
const { HTTPParser } = createRequire(import.meta.url)('_http_common') as HttpCommon
if (typeof HTTPParser !== 'function' || typeof HTTPParser.kOnHeadersComplete !== 'number') throw new Error('this Node.js has no llhttp binding in _http_common')
const { kOnHeaders, kOnHeadersComplete, kOnBody, kOnMessageComplete } = HTTPParser

/**
 * What went wrong talking to the app, for the decision line's error (not a GH_ error: the caller gets
 * GH_UPSTREAM_UNAVAILABLE or GH_UPSTREAM_TIMEOUT). `code`: a system code (ECONNREFUSED...), an llhttp
 * code (HPE_...), or INVALID_HEADER_VALUE, INVALID_RESPONSE, BODY_LENGTH_MISMATCH, UNEXPECTED_UPGRADE, RESPONSE_TIMEOUT, POOL_CLOSED.
 */
export class AppConnectionError extends Error {
  readonly code: string
  /** The app did not start its answer within the deadline (504, not 502). */
  readonly timeout: boolean
  constructor (code: string, message: string, timeout = false) {
    super(message)
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

export interface AppRequest {
  method: string
  /** Origin-form target. */
  path: string
  /** End-to-end headers only (hop-by-hop ones are dropped before this). */
  headers: OutgoingHttpHeaders
  body: Readable | null
}

export interface AppPoolOptions {
  /** Time allowed for the app to start answering (response headers). */
  responseTimeoutMs: number
  connectTimeoutMs: number
  /** At most this many connections; further requests wait for one. */
  connections?: number
  /**
   * An idle connection is closed after this long: below the keep-alive timeout of common app servers
   * (Node 5 s), so the app rarely closes one as we send on it (that race is retried once).
   */
  keepAliveMs?: number
}

// Methods whose empty body is still sent as `content-length: 0` (RFC 9110 8.6, as undici and curl do).
const EXPECTS_BODY = new Set(['POST', 'PUT', 'PATCH', 'QUERY'])
// Never written from the caller's headers: the framing is ours, and Expect was answered by our server.
const FRAMING = new Set(['transfer-encoding', 'connection', 'keep-alive', 'expect'])
const BAD_VALUE = /[\r\n\0]/
const NO_HEADERS: string[] = []

class Exchange {
  readonly req: AppRequest
  readonly handler: AppExchangeHandler
  /** Response headers collected across reads (llhttp flushes them in parts when they span packets). */
  partial: string[] = NO_HEADERS
  /** The final (>= 200) response head has arrived. */
  headed = false
  status = 0
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

/** A request head as one string, with our framing headers; throws on a value that would split a line. */
function requestHead (r: AppRequest, defaultHost: string): { head: string, chunked: boolean, length: number } {
  let head = `${r.method} ${r.path} HTTP/1.1\r\n`
  let length = -1
  let host = false
  const h = r.headers
  for (const name in h) {
    const value = h[name]
    if (value === undefined || FRAMING.has(name)) continue
    if (name === 'content-length') { length = Number(value); continue }
    if (name === 'host') host = true
    if (Array.isArray(value)) {
      for (const v of value) {
        if (BAD_VALUE.test(v)) throw new AppConnectionError('INVALID_HEADER_VALUE', `the value of ${name} cannot be sent over HTTP/1.1`)
        head += `${name}: ${v}\r\n`
      }
    } else {
      const v = typeof value === 'string' ? value : String(value)
      if (BAD_VALUE.test(v)) throw new AppConnectionError('INVALID_HEADER_VALUE', `the value of ${name} cannot be sent over HTTP/1.1`)
      head += `${name}: ${v}\r\n`
    }
  }
  if (!host) head += `host: ${defaultHost}\r\n`
  let chunked = false
  if (r.body === null) {
    if (length > 0) length = 0 // nothing follows: never promise the app bytes it will not get
    if (length === 0 || EXPECTS_BODY.has(r.method)) head += 'content-length: 0\r\n'
  } else if (length >= 0 && Number.isSafeInteger(length)) head += `content-length: ${length}\r\n`
  else { chunked = true; head += 'transfer-encoding: chunked\r\n' }
  return { head: `${head}connection: keep-alive\r\n\r\n`, chunked, length }
}

/**
 * A request body we stop sending (the exchange ended first) keeps flowing, into nothing, so the
 * caller's server can read it to its end and answer on a kept-alive connection.
 */
function letBodyGo (x: Exchange): void {
  if (x.req.body !== null && !x.sent) x.req.body.resume()
}

class AppConnection {
  readonly socket: Socket
  private readonly pool: AppH1Pool
  private readonly parser: NativeParser
  /** The exchange on this connection, if any. */
  current: Exchange | undefined
  /** Has answered at least one request (a failure before any answer byte may be a stale connection). */
  reused = false
  /** Bytes of the current response have arrived. */
  answered = false
  keepAlive = true
  connected = false
  closed = false
  idleSince = 0
  /** The deadline for the app's response head, re-armed per request (one timer per connection). */
  private readonly timer: NodeJS.Timeout
  private connectTimer: NodeJS.Timeout | undefined
  private error: AppConnectionError | undefined

  constructor (pool: AppH1Pool) {
    this.pool = pool
    const parser = new HTTPParser()
    this.parser = parser
    parser.initialize(HTTPParser.RESPONSE, {})
    parser[kOnHeaders] = (headers: string[]) => { this.onHeadersPart(headers) }
    parser[kOnHeadersComplete] = (_maj: number, _min: number, headers: string[] | undefined, _m: unknown, _u: unknown, status: number, _msg: string, upgrade: boolean, keepAlive: boolean) => this.onHead(headers, status, upgrade, keepAlive)
    parser[kOnBody] = (chunk: Buffer) => { this.onBody(chunk) }
    parser[kOnMessageComplete] = () => { this.onMessageComplete() }
    this.timer = setTimeout(() => { this.onTimer() }, pool.o.responseTimeoutMs)
    this.timer.unref()
    this.connectTimer = setTimeout(() => {
      this.error = new AppConnectionError('ETIMEDOUT', `connect to the app timed out after ${pool.o.connectTimeoutMs} ms`)
      this.socket.destroy()
    }, pool.o.connectTimeoutMs)
    const socket = connect({ host: pool.host, port: pool.port, noDelay: true })
    this.socket = socket
    socket.on('connect', () => { this.connected = true; clearTimeout(this.connectTimer); this.connectTimer = undefined })
    socket.on('data', (d: Buffer) => { this.onData(d) })
    socket.on('end', () => { this.onEnd() })
    socket.on('error', (err: NodeJS.ErrnoException) => { this.error ??= new AppConnectionError(err.code ?? 'ECONNRESET', err.message) })
    socket.on('close', () => { this.onClose() })
  }

  /** Sends `x` on this connection (a fresh one, or an idle one taken from the pool). */
  start (x: Exchange): void {
    this.current = x
    this.answered = false
    this.timer.refresh()
    let framing: ReturnType<typeof requestHead>
    try { framing = requestHead(x.req, this.pool.authority) } catch (err) { this.fail(err as AppConnectionError); return }
    x.handler.onStart(() => { if (this.current === x) { this.current = undefined; this.destroy() } })
    if (this.current !== x) return // aborted from onStart: the caller had already gone
    const socket = this.socket
    const body = x.req.body
    // latin1: header values are the bytes the caller sent, as the parser decoded them (one char per byte).
    if (body === null) { x.sent = true; socket.write(framing.head, 'latin1'); return }
    socket.write(framing.head, 'latin1')
    let left = framing.length
    const onChunk = (chunk: Buffer): void => {
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
      if (!ok) { body.pause(); socket.once('drain', () => { body.resume() }) }
    }
    body.on('data', onChunk)
    body.once('end', () => {
      if (this.current !== x) return
      if (framing.chunked) socket.write('0\r\n\r\n')
      else if (left !== 0) { this.fail(new AppConnectionError('BODY_LENGTH_MISMATCH', 'the request body is shorter than its content-length')); return }
      x.sent = true
      // Answered before the body was all sent: the connection was kept only for the body's end.
      if (x.done) this.release()
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
    if (x === undefined) { this.destroy(); return 1 } // an answer nobody asked for
    if (upgrade || status === 101) { this.fail(new AppConnectionError('UNEXPECTED_UPGRADE', 'the app switched protocols on a plain request')); return 1 }
    let raw = headers ?? NO_HEADERS
    if (x.partial !== NO_HEADERS) { raw = headers === undefined ? x.partial : x.partial.concat(headers); x.partial = NO_HEADERS }
    // 1xx (100 Continue, 103 Early Hints) are hop-level: our own server answered Expect.
    if (status < 200) return 1
    x.headed = true
    x.status = status
    this.keepAlive = keepAlive
    x.handler.onHeaders(status, raw, this.resumeFn)
    return x.req.method === 'HEAD' || status === 204 || status === 304 ? 1 : 0
  }

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
    this.release()
  }

  private release (): void {
    this.current = undefined
    if (!this.keepAlive || this.closed) { this.destroy(); return }
    this.pool.idle(this)
  }

  private onData (d: Buffer): void {
    this.answered = true
    let r: number | Error
    // The handler runs inside execute(): a head the caller's side refuses to write (node:http checks
    // header characters more strictly than llhttp reads them) fails this exchange, never the process.
    try { r = this.parser.execute(d) } catch (err) { this.fail(new AppConnectionError('INVALID_RESPONSE', `the app's response cannot be relayed: ${(err as Error).message}`)); return }
    if (r instanceof Error) {
      const code = (r as Error & { code?: string }).code ?? 'HPE_INVALID'
      this.fail(new AppConnectionError(code, `the app's response cannot be parsed (${code})`))
    }
  }

  private onEnd (): void {
    this.keepAlive = false
    // A response framed by the end of the connection is complete now.
    let r: Error | undefined
    try { r = this.parser.finish() } catch (err) { r = err as Error }
    if (r instanceof Error && this.current !== undefined) this.error = new AppConnectionError('ECONNRESET', 'the app closed the connection mid-response')
    this.socket.destroy()
  }

  private onTimer (): void {
    const x = this.current
    if (x === undefined || x.headed) return
    this.fail(new AppConnectionError('RESPONSE_TIMEOUT', `app did not answer within ${this.pool.o.responseTimeoutMs} ms`, true))
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
    this.parser.remove()
    this.parser.free()
    this.pool.gone(this)
    const x = this.current
    if (x === undefined || x.done) return
    this.current = undefined
    // A kept-alive connection the app closed just as we sent on it: nothing of the request can have
    // been acted on (no answer byte came), so a bodiless request is sent once more on a fresh one.
    if (this.reused && !this.answered && x.req.body === null && !x.retried) {
      x.retried = true
      this.pool.dispatchExchange(x)
      return
    }
    x.done = true
    letBodyGo(x)
    x.handler.onError(this.error ?? new AppConnectionError('ECONNRESET', 'the app closed the connection'))
  }

  destroy (): void { this.socket.destroy() }
}

/** Connections to one app (host:port), at most `connections` of them, idle ones reused most-recent first. */
export class AppH1Pool {
  readonly host: string
  readonly port: number
  readonly authority: string
  readonly o: Required<AppPoolOptions>
  private readonly free: AppConnection[] = []
  private readonly waiting: Exchange[] = []
  private open = 0
  private closing = false
  private readonly sweeper: NodeJS.Timeout

  constructor (upstream: { host: string, port: number }, o: AppPoolOptions) {
    this.host = upstream.host
    this.port = upstream.port
    this.authority = `${upstream.host.includes(':') ? `[${upstream.host}]` : upstream.host}:${upstream.port}`
    this.o = { connections: 512, keepAliveMs: 4000, ...o }
    // One sweep a second closes connections idle for longer than keepAliveMs (not a timer per connection).
    this.sweeper = setInterval(() => { this.sweep() }, Math.min(1000, this.o.keepAliveMs))
    this.sweeper.unref()
  }

  /** Sends `req` to the app; `handler` hears how it goes. */
  dispatch (req: AppRequest, handler: AppExchangeHandler): void {
    this.dispatchExchange(new Exchange(req, handler))
  }

  /** @internal */
  dispatchExchange (x: Exchange): void {
    if (this.closing) { x.done = true; x.handler.onError(new AppConnectionError('POOL_CLOSED', 'the sidecar is shutting down')); return }
    let c = this.free.pop()
    while (c !== undefined && c.closed) c = this.free.pop()
    if (c === undefined) {
      if (this.open >= this.o.connections) { this.waiting.push(x); return }
      c = new AppConnection(this)
      this.open++
    }
    c.start(x)
  }

  /** @internal A connection is free for the next request. */
  idle (c: AppConnection): void {
    if (this.closing) { c.destroy(); return }
    const next = this.waiting.shift()
    if (next !== undefined) { c.start(next); return }
    c.idleSince = performance.now()
    this.free.push(c)
  }

  /** @internal A connection closed. */
  gone (c: AppConnection): void {
    this.open--
    const i = this.free.indexOf(c)
    if (i !== -1) this.free.splice(i, 1)
    const next = this.waiting.shift()
    if (next !== undefined) this.dispatchExchange(next)
  }

  private sweep (): void {
    const limit = performance.now() - this.o.keepAliveMs
    // Oldest first: the stack's bottom has been idle longest.
    while (this.free.length > 0 && this.free[0]!.idleSince < limit) this.free.shift()!.destroy()
  }

  /** Connections open now (busy and idle). */
  get size (): number { return this.open }

  /** Closes idle connections now; busy ones close as their exchange ends. */
  async close (): Promise<void> {
    this.closing = true
    clearInterval(this.sweeper)
    for (const x of this.waiting.splice(0)) { x.done = true; x.handler.onError(new AppConnectionError('POOL_CLOSED', 'the sidecar is shutting down')) }
    for (const c of this.free.splice(0)) c.destroy()
  }
}
