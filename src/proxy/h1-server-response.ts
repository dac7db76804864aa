import { STATUS_CODES, type OutgoingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import type { ResponseSink } from './exchange.ts'

// The answer to one HTTP/1.1 request on a caller's connection (h1-server-connection.ts), written
// straight to the TLS socket: the head in one latin1 write, the body framed by RFC 9112 6 as
// node:http's ServerResponse frames it. The app's content-length is kept; without one the body is
// chunked (an HTTP/1.0 caller's is delimited by closing the connection); a HEAD, 1xx, 204 or 304
// answer has none. Connection and Keep-Alive are this hop's own, never the app's. The head and the
// writes of the same tick go out corked, as one TLS record where they fit (a head whose body comes
// a tick later, those of the same turn of the event loop).

/** What the connection tells each answer, and how it hears that one is complete. */
export interface ResponseFraming {
  /** Advertised in Keep-Alive: timeout= (the connection closes a second after it, as node:http does); undefined: no idle deadline, no Keep-Alive header. */
  keepAliveSeconds: number | undefined
  done: (res: H1Response) => void
}

/** A header value the caller's parser would split or reject (node:http's rule for outgoing values). */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** A header that cannot be written (the app's, after its parser let it through): the exchange fails as 502. */
export class InvalidResponseHeaderError extends Error {
  readonly code = 'INVALID_HEADER_VALUE'
}

let dateSecond = -1
let dateText = ''
/** The Date header's value, formatted once a second. */
function httpDate (): string {
  const now = Date.now()
  const s = Math.floor(now / 1000)
  if (s !== dateSecond) { dateSecond = s; dateText = new Date(now).toUTCString() }
  return dateText
}

const uncork = (socket: Socket): void => { socket.uncork() }

export class H1Response implements ResponseSink {
  headersSent = false
  statusCode = 200
  /** The connection ends after this answer (the request or the answer said close, or the body is close-delimited). */
  closesConnection: boolean
  /** Runs once the answer is complete (the stage's in-flight bookkeeping). */
  onFinish: (() => void) | undefined
  private readonly socket: Socket
  private readonly headRequest: boolean
  private readonly http10: boolean
  private readonly framing: ResponseFraming
  private chunked = false
  private bodyAllowed = true
  private finished = false
  private pendingTrailers: OutgoingHttpHeaders | undefined
  private abortFn: (() => void) | undefined
  private drainFn: (() => void) | undefined

  constructor (socket: Socket, headRequest: boolean, keepAlive: boolean, http10: boolean, framing: ResponseFraming) {
    this.socket = socket
    this.headRequest = headRequest
    this.closesConnection = !keepAlive
    this.http10 = http10
    this.framing = framing
  }

  /** Writes the status line and headers (the caller's framing added); throws InvalidResponseHeaderError before writing anything. */
  writeHead (status: number, headers: OutgoingHttpHeaders): this {
    if (this.headersSent) return this
    let text = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'unknown'}\r\n`
    let length = false
    let date = false
    let close = this.closesConnection
    for (const name in headers) {
      const value = headers[name]
      if (value === undefined) continue
      if (!TOKEN.test(name)) throw new InvalidResponseHeaderError(`invalid header name ${JSON.stringify(name)}`)
      const lower = name.toLowerCase()
      // This hop's framing and connection handling are written below, never taken from the headers given.
      if (lower === 'transfer-encoding' || lower === 'keep-alive') continue
      if (lower === 'connection') { if (/(?:^|,)\s*close\s*(?:,|$)/i.test(String(value))) close = true; continue }
      if (lower === 'content-length') length = true
      else if (lower === 'date') date = true
      if (Array.isArray(value)) for (const v of value) text += line(name, v)
      else text += line(name, value)
    }
    this.bodyAllowed = !this.headRequest && status !== 204 && status !== 304 && !(status >= 100 && status < 200)
    if (this.bodyAllowed && !length) {
      if (this.http10) close = true
      else { this.chunked = true; text += 'Transfer-Encoding: chunked\r\n' }
    }
    if (!date) text += `Date: ${httpDate()}\r\n`
    const seconds = this.framing.keepAliveSeconds
    text += close ? 'Connection: close\r\n\r\n' : seconds === undefined ? 'Connection: keep-alive\r\n\r\n' : `Connection: keep-alive\r\nKeep-Alive: timeout=${seconds}\r\n\r\n`
    this.closesConnection = close
    this.headersSent = true
    this.statusCode = status
    if (!this.socket.destroyed) { this.cork(); this.socket.write(text, 'latin1') }
    return this
  }

  /** The interim 100 Continue: the client may send the body now. */
  writeContinue (): void {
    if (!this.headersSent && !this.socket.destroyed) this.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1')
  }

  head (status: number, headers: OutgoingHttpHeaders, opts: { end: boolean, bodyLater?: boolean }): void {
    // A body that comes a tick later (an HTTP/2 stream's DATA, handed over after its 'response') is
    // still read in this turn of the event loop: the head waits for the turn's end to leave with it.
    if (opts.bodyLater === true && !opts.end) this.cork(true)
    this.writeHead(status, headers)
    if (opts.end) this.end()
  }

  /** false: the caller's side is full; onDrain's function runs when it is not. */
  write (chunk: Buffer | string): boolean {
    if (!this.bodyAllowed || this.finished || this.socket.destroyed) return true
    const size = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length
    if (size === 0) return true
    this.cork()
    if (!this.chunked) return this.socket.write(chunk)
    this.socket.write(`${size.toString(16)}\r\n`, 'latin1')
    this.socket.write(chunk)
    return this.socket.write('\r\n', 'latin1')
  }

  /** Completes the answer (with `body` as its last bytes). */
  end (body?: string): this {
    if (this.finished) return this
    if (!this.headersSent) this.writeHead(this.statusCode, {})
    if (body !== undefined) this.write(body)
    if (this.chunked && !this.socket.destroyed) {
      let last = '0\r\n'
      const t = this.pendingTrailers
      if (t !== undefined) {
        for (const name in t) {
          const value = t[name]
          if (value === undefined || !TOKEN.test(name)) continue
          for (const v of Array.isArray(value) ? value : [value]) if (!BAD_VALUE.test(String(v))) last += `${name}: ${String(v)}\r\n`
        }
      }
      this.cork()
      this.socket.write(`${last}\r\n`, 'latin1')
    }
    this.finished = true
    this.onFinish?.()
    this.framing.done(this)
    return this
  }

  trailers (t: OutgoingHttpHeaders): void { this.pendingTrailers = t }
  destroy (): void { this.socket.destroy() }
  onAbort (fn: () => void): void { this.abortFn = fn }
  onDrain (fn: () => void): void { this.drainFn = fn }

  /** The connection closed: an answer not yet complete is abandoned. */
  aborted (): void {
    if (this.finished) return
    this.finished = true
    this.abortFn?.()
  }

  drained (): void { this.drainFn?.() }

  /** Corks the socket until the next tick, or with `turn` until the end of this turn of the event loop. */
  private cork (turn = false): void {
    if (this.socket.writableCorked > 0) return
    this.socket.cork()
    if (turn) setImmediate(uncork, this.socket)
    else process.nextTick(uncork, this.socket)
  }
}

function line (name: string, value: string | number): string {
  const v = typeof value === 'string' ? value : String(value)
  if (BAD_VALUE.test(v)) throw new InvalidResponseHeaderError(`invalid value for header ${JSON.stringify(name)}`)
  return `${name}: ${v}\r\n`
}
