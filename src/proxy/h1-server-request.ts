import { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import type { Socket } from 'node:net'

// One HTTP/1.1 request as the caller's connection (h1-server-connection.ts) hands it to its handler:
// its head, with the headers combined by node:http's rules, and its body, a stream only when the
// request has one.

// node:http's own rules for combining repeated header fields (which repeat joins, which wins first).
const addHeaderLine = (IncomingMessage.prototype as unknown as { _addHeaderLine: (this: object, name: string, value: string, dest: Record<string, unknown>) => void })._addHeaderLine
const HEADER_RULES = { joinDuplicateHeaders: false }

export type H1Headers = Record<string, string | string[] | undefined>

/** A raw header list (names and values alternating) as IncomingMessage.headers has it: names lower-cased, repeats combined. */
export function mergeHeaders (raw: readonly string[]): H1Headers {
  const headers: H1Headers = {}
  for (let i = 0; i < raw.length; i += 2) addHeaderLine.call(HEADER_RULES, raw[i]!, raw[i + 1]!, headers)
  return headers
}

/** A request body: read from the connection's socket, which is read again when this is read (backpressure). */
export class RequestBody extends Readable {
  private readonly wanted: () => void
  constructor (wanted: () => void) { super(); this.wanted = wanted }
  override _read (): void { this.wanted() }
  // A body cut short (the caller went away) is an error only to a reader listening for one, as IncomingMessage does it.
  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void { cb(this.listenerCount('error') > 0 ? err : null) }
}

const CONTINUE = /(?:^|\W)100-continue(?:$|\W)/i

export class H1Request {
  readonly socket: Socket
  readonly method: string
  readonly url: string
  readonly versionMajor: number
  readonly versionMinor: number
  readonly headers: H1Headers
  /** Whether the request lets the connection stay open after its answer (version and Connection). */
  readonly keepAlive: boolean
  /** transfer-encoding, or a content-length above 0: what node:http's callers read as a body. */
  readonly body: RequestBody | null
  /** Every byte of the request, body included, has been read. */
  complete = false
  // The connection's bookkeeping: the body is read and dropped (the answer is out, or a refusal
  // drains it), and a refusal's drain deadline, cleared once the body is all read.
  discard = false
  drainTimer: NodeJS.Timeout | undefined

  constructor (socket: Socket, method: string, url: string, major: number, minor: number, headers: H1Headers, keepAlive: boolean, body: RequestBody | null) {
    this.socket = socket
    this.method = method
    this.url = url
    this.versionMajor = major
    this.versionMinor = minor
    this.headers = headers
    this.keepAlive = keepAlive
    this.body = body
  }

  /** An HTTP/1.1 request with Expect: 100-continue and a body: the client waits for a 100 before sending it. */
  get expectsContinue (): boolean {
    const expect = this.headers.expect
    return this.body !== null && this.versionMinor === 1 && typeof expect === 'string' && CONTINUE.test(expect)
  }

  /** What the request line or head breaks that the judge refuses with 400 (node:http refused these itself, without a decision line). */
  get protocolProblem (): string | undefined {
    // llhttp takes a request line without a version as HTTP/0.9, and any digit pair after "HTTP/".
    if (this.versionMajor !== 1) return 'the request line must end with HTTP/1.1 or HTTP/1.0'
    // RFC 9112 3.2: an HTTP/1.1 request without Host is answered 400.
    if (this.versionMinor === 1 && this.headers.host === undefined) return 'an HTTP/1.1 request must carry Host'
    return undefined
  }
}
