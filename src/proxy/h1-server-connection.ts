import type { Socket } from 'node:net'
import { HTTPParser, methods, releaseParser, SocketReader, type NativeParser, type ParseError } from './llhttp.ts'
import { H1Response, type ResponseFraming } from './h1-server-response.ts'
import { H1Request, RequestBody, mergeHeaders } from './h1-server-request.ts'
import { hasBody } from './headers.ts'
import { SendDeadline } from './send-deadline.ts'
import type { H1Handlers, H1ServerOptions } from './h1-server.ts'

// One caller's HTTP/1.1 connection (h1-server.ts keeps them): Node's llhttp binding (llhttp.ts,
// strict, as node:http parses) reads requests off the socket (TLS, after the inbound listener has
// verified the peer, or the app's plain connection to the outbound listener), and each is handed to
// the listener's handler (inbound-h1.ts, outbound.ts) with an H1Response to answer it. What node:http's server did
// for us and is done here instead, without an IncomingMessage and a ServerResponse stream per
// request (issue 21): the request body as a stream only when there is one, with backpressure onto the
// socket; pipelined requests answered one at a time, in order; the headers and request deadlines
// (a slowloris is cut off), the keep-alive idle deadline; Upgrade and CONNECT handed over with the
// bytes after the head; a parse error or a deadline reported once, as node:http's 'clientError'.

const { kOnMessageBegin, kOnHeaders, kOnHeadersComplete, kOnBody, kOnMessageComplete } = HTTPParser

/** Pipelined requests read ahead of the one being answered; past this many the socket is not read. */
const MAX_QUEUED = 16
const MAX_HEADER_FIELDS = 1000
// node:http's keepAliveTimeoutBuffer: the connection is closed this long after the Keep-Alive: timeout= it advertises.
const IDLE_GRACE_MS = 1000
const NO_HEADERS: string[] = []

export class H1Connection {
  readonly socket: Socket
  private readonly parser: NativeParser
  private readonly handlers: H1Handlers
  private readonly opts: H1ServerOptions
  /** The request being read (its body goes to it). */
  private reading: H1Request | undefined
  /** The request being answered, and those read after it waiting their turn. */
  private answering: { req: H1Request, res: H1Response } | undefined
  private readonly queued: H1Request[] = []
  private partial: string[] = NO_HEADERS
  private partialUrl = ''
  /** When the current request (or the connection, before its first) started, for the deadlines; 0 between requests. */
  private messageStart: number
  private headComplete = false
  /** An Upgrade or CONNECT head was read: the socket is handed over once the parser returns. */
  private upgrading: H1Request | undefined
  private bodyFull = false
  private readonly reader: SocketReader
  /** Since when the connection has been idle between requests (performance.now()), or 0: the sweep closes it past its deadline. */
  private idleSince = 0
  /** Answer with Connection: close and end the connection after the answer in progress (shutdown). */
  private draining = false
  private closed = false
  private failed = false
  /** A parse error after the requests still to be answered: reported once they are. */
  private laterError: ParseError | undefined
  private readonly framing: ResponseFraming
  private readonly send: SendDeadline | undefined

  constructor (socket: Socket, handlers: H1Handlers, opts: H1ServerOptions) {
    this.socket = socket
    this.handlers = handlers
    this.opts = opts
    this.messageStart = performance.now()
    this.send = opts.sendTimeoutMs > 0 ? new SendDeadline(opts.sendTimeoutMs) : undefined
    this.framing = { keepAliveSeconds: opts.idleTimeoutMs > 0 ? Math.floor(opts.idleTimeoutMs / 1000) : undefined, done: (res) => { this.answered(res) } }
    const parser = new HTTPParser()
    this.parser = parser
    parser.initialize(HTTPParser.REQUEST, {}, opts.maxHeaderSize, 0)
    parser[kOnMessageBegin] = () => { this.messageStart = performance.now(); this.headComplete = false; this.idleSince = 0 }
    parser[kOnHeaders] = (headers: string[], url: string) => {
      // After the head, these are a chunked body's trailers: not relayed (as the app side does not),
      // and never kept for the next request's head, which they would join.
      if (this.headComplete) return
      this.partial = this.partial === NO_HEADERS ? headers : this.partial.concat(headers)
      this.partialUrl += url
    }
    parser[kOnHeadersComplete] = (major: number, minor: number, headers: string[] | undefined, method: number, url: string | undefined, _s: unknown, _m: unknown, upgrade: boolean, keepAlive: boolean) =>
      this.onHead(major, minor, headers, method, url, upgrade, keepAlive)
    parser[kOnBody] = (chunk: Buffer) => { this.onBody(chunk) }
    parser[kOnMessageComplete] = () => { this.onMessageComplete() }
    // 'data' first: it puts the socket in flowing mode (reading), and brings what the socket had
    // already read before the parser took over its handle.
    socket.on('data', this.onData)
    socket.on('end', this.onEnd)
    socket.on('drain', this.onDrain)
    socket.on('error', this.onError)
    socket.on('close', this.onClose)
    this.reader = new SocketReader(parser, socket, (ret) => { this.afterExecute(ret, undefined) })
  }

  /** Whether a request is being read or answered (shutdown closes the connection now only when not). */
  private get busy (): boolean { return this.answering !== undefined || this.reading !== undefined || this.messageStart !== 0 }

  /**
   * Called by the deadline sweep: a head or a request that is taking too long is reported and the
   * connection closed; so is a caller past its send deadline (the answer in progress then ends as
   * client-gone in its decision line, and the app's connection is freed).
   */
  checkDeadlines (now: number): void {
    if (this.closed) return
    if (this.send?.expired(now, this.socket.writableLength) === true) {
      this.handlers.sendTimeout?.(this.socket, this.socket.writableLength)
      this.socket.destroy()
      return
    }
    if (this.idleSince !== 0) {
      if (this.opts.idleTimeoutMs > 0 && now - this.idleSince > this.opts.idleTimeoutMs + IDLE_GRACE_MS) this.socket.destroy()
      return
    }
    if (this.messageStart === 0) return
    const age = now - this.messageStart
    if ((!this.headComplete && this.opts.headersTimeoutMs > 0 && age > this.opts.headersTimeoutMs) || (this.opts.requestTimeoutMs > 0 && age > this.opts.requestTimeoutMs)) {
      this.messageStart = 0
      this.handlers.clientError({ code: 'ERR_HTTP_REQUEST_TIMEOUT' }, this.socket)
      this.socket.destroy()
    }
  }

  /** Closes the connection now if nothing is in progress on it, else after the answer in progress. */
  closeIfIdle (): void {
    this.draining = true
    if (!this.busy) this.socket.destroy()
  }

  private readonly onData = (d: Buffer): void => {
    if (this.closed || this.failed) return
    this.afterExecute(this.parser.execute(d), d)
  }

  /** After the parser has read `d` (or, consuming the handle, the current read): an error, or an Upgrade head to hand over. */
  private afterExecute (ret: number | ParseError, d: Buffer | undefined): void {
    if (this.closed || this.failed) return
    if (typeof ret !== 'number') {
      // Bytes after a request that closes the connection (Connection: close, HTTP/1.0): never read as
      // a request (RFC 9112 9.6), and not an error that would cut the answer still owed.
      if (ret.code === 'HPE_CLOSED_CONNECTION') { this.failed = true; this.messageStart = 0; return }
      this.parseFailed(ret)
      return
    }
    const up = this.upgrading
    if (up === undefined) return
    // An Upgrade pipelined behind requests still being answered: their answers would land inside the
    // tunnel. No client does this; the connection is closed instead.
    if (this.answering !== undefined || this.queued.length > 0) { this.failed = true; this.handlers.dropped?.(up, 'an Upgrade or CONNECT pipelined behind requests still being answered'); this.socket.destroy(); return }
    this.handOver(up, (d ?? this.parser.getCurrentBuffer()).subarray(ret))
  }

  /**
   * Nothing more is read after a parse error: the handler answers it (and ends the connection) once.
   * An error in a request pipelined behind the one being answered is that later request's: the
   * requests read before it are answered first, in order, and then the error (RFC 9112 9.3.2), so
   * an answer in progress is neither cut nor blamed for bytes that came after it.
   */
  private parseFailed (err: ParseError): void {
    this.messageStart = 0
    this.failed = true
    if (this.answering !== undefined && this.reading !== this.answering.req) {
      this.laterError = err
      this.updateFlow()
      return
    }
    this.handlers.clientError(err, this.socket)
  }

  private onHead (major: number, minor: number, headers: string[] | undefined, methodIndex: number, url: string | undefined, upgrade: boolean, keepAlive: boolean): number {
    if (this.closed || this.failed) return 1
    let raw = headers ?? NO_HEADERS
    if (this.partial !== NO_HEADERS) { raw = headers === undefined ? this.partial : this.partial.concat(headers); this.partial = NO_HEADERS }
    const target = url === undefined || url === '' ? this.partialUrl : this.partialUrl + url
    this.partialUrl = ''
    this.headComplete = true
    // node:http's limit (maxHeadersCount): more fields than this is refused as headers too large, not forwarded.
    if (raw.length > 2 * MAX_HEADER_FIELDS) { this.parseFailed(Object.assign(new Error('too many header fields'), { code: 'HPE_HEADER_OVERFLOW', bytesParsed: 0 })); return 1 }
    const merged = mergeHeaders(raw)
    const method = methods[methodIndex] ?? ''
    const req = new H1Request(this.socket, method, target, major, minor, merged, keepAlive, !upgrade && hasBody(merged) ? new RequestBody(this.bodyWanted) : null)
    if (upgrade) { this.upgrading = req; return 0 }
    // The HTTP/2 preface read as HTTP/1.1 (a client that did not negotiate h2): nothing to answer.
    if (method === 'PRI') { this.socket.destroy(); return 1 }
    this.reading = req
    if (this.answering === undefined) this.dispatch(req)
    else { this.queued.push(req); this.updateFlow() }
    return 0
  }

  private onBody (chunk: Buffer): void {
    const req = this.reading
    if (req === undefined || req.discard || req.body === null) return
    if (!req.body.push(chunk)) { this.bodyFull = true; this.updateFlow() }
  }

  private onMessageComplete (): void {
    const req = this.reading
    this.messageStart = 0
    if (req === undefined) return
    this.reading = undefined
    req.complete = true
    clearTimeout(req.drainTimer)
    if (req.body !== null && !req.discard) req.body.push(null)
    if (this.answering === undefined && this.queued.length === 0) this.startIdle()
  }

  private dispatch (req: H1Request): void {
    const res = new H1Response(this.socket, req.method === 'HEAD', req.keepAlive && !this.draining, req.versionMinor === 0 && req.versionMajor === 1, this.framing)
    this.answering = { req, res }
    this.handlers.request(req, res, this)
  }

  /** An answer is complete: the connection ends, or the next request read ahead is answered, or it waits idle. */
  private answered (res: H1Response): void {
    const a = this.answering
    if (a === undefined || a.res !== res) return
    this.answering = undefined
    // Closed once the answer is written, as node:http does (destroySoon): a caller that never closes
    // its side cannot hold the connection open by keeping it half-open. Nothing read after it (or
    // after a parse error) is answered, let alone forwarded (RFC 9112 9.6).
    if (res.closesConnection || this.draining || (this.failed && this.laterError === undefined)) { this.failed = true; this.queued.length = 0; this.socket.destroySoon(); return }
    // The app answered before the body was all read (or never read it): the rest is read and dropped, as node:http does.
    if (!a.req.complete) this.discardBody(a.req)
    const next = this.queued.shift()
    // After the answer's caller has finished with it (its decision line), so lines follow the answers' order.
    if (next !== undefined) { this.updateFlow(); queueMicrotask(() => { if (!this.closed) this.dispatch(next) }); return }
    const later = this.laterError
    if (later !== undefined) {
      this.laterError = undefined
      queueMicrotask(() => { if (!this.closed) this.handlers.clientError(later, this.socket) })
      return
    }
    if (this.reading === undefined) this.startIdle()
  }

  /**
   * After a refusal: reads and drops the rest of the body so the connection can be reused, and
   * returns true if it is declared at most `maxBytes` (false: the answer should close the connection).
   * A body still arriving after `maxMs` has its connection destroyed, so a denied caller cannot hold
   * the connection by trickling bytes.
   */
  drainBody (r: H1Request, maxBytes: number, maxMs: number): boolean {
    if (r.complete || r.body === null) return true
    this.discardBody(r)
    r.drainTimer = setTimeout(() => { if (!r.complete) this.socket.destroy() }, maxMs)
    r.drainTimer.unref()
    return r.headers['transfer-encoding'] === undefined && Number(r.headers['content-length'] ?? 0) <= maxBytes
  }

  private discardBody (r: H1Request): void {
    if (r.discard) return
    r.discard = true
    // Nobody reads the stream from here on: it ends (and its consumer, if any, stops) with what it has.
    if (r.body !== null && !r.complete) r.body.destroy()
    this.bodyFull = false
    this.updateFlow()
  }

  /** The request body's reader wants more. */
  private readonly bodyWanted = (): void => {
    if (!this.bodyFull) return
    this.bodyFull = false
    this.updateFlow()
  }

  private updateFlow (): void {
    if (!this.closed) this.reader.reading(!this.failed && !this.bodyFull && this.queued.length < MAX_QUEUED)
  }

  private handOver (req: H1Request, head: Buffer): void {
    this.detach()
    if (req.method === 'CONNECT') this.handlers.connect(req, this.socket, head)
    else this.handlers.upgrade(req, this.socket, head)
  }

  private startIdle (): void {
    // A request whose head has begun is not idle time: its deadlines are the headers and request ones.
    if (this.idleSince !== 0 || this.closed || this.messageStart !== 0) return
    if (this.draining) { this.socket.destroy(); return }
    // Checked by the server's sweep, not a socket timer: arming and clearing one per request cost
    // about 0.7 % of a request at saturation (issue 21); the sweep closes it at most one sweep late.
    this.idleSince = performance.now()
  }

  private readonly onDrain = (): void => { this.answering?.res.drained() }
  private readonly onError = (): void => { this.socket.destroy() }

  private readonly onEnd = (): void => {
    if (this.closed || this.failed) return
    // The caller half-closed: a request cut short in its head or body is a parse error.
    const err = this.parser.finish()
    if (err !== undefined) this.parseFailed(err)
  }

  private readonly onClose = (): void => {
    if (this.closed) return
    this.closed = true
    const a = this.answering
    this.answering = undefined
    a?.res.aborted()
    const gone = Object.assign(new Error('aborted'), { code: 'ECONNRESET' })
    for (const r of [a?.req, this.reading, ...this.queued]) {
      if (r === undefined) continue
      clearTimeout(r.drainTimer)
      if (r.body !== null && !r.complete) r.body.destroy(gone)
    }
    this.queued.length = 0
    this.reading = undefined
    this.reader.release()
    releaseParser(this.parser)
  }

  /** The socket leaves HTTP/1.1 (Upgrade, CONNECT): nothing of this connection listens to it any more. */
  private detach (): void {
    this.closed = true
    // Paused until the new owner reads it (a relay pipes it once the app has switched protocols).
    this.socket.pause()
    this.reader.release()
    this.socket.off('data', this.onData)
    this.socket.off('end', this.onEnd)
    this.socket.off('drain', this.onDrain)
    this.socket.off('error', this.onError)
    this.socket.off('close', this.onClose)
    this.socket.setTimeout(0)
    releaseParser(this.parser)
  }

}
