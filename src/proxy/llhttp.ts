import { createRequire } from 'node:module'
import type { Socket } from 'node:net'

// Node's own llhttp binding: the parser node:http uses, from `_http_common`, an internal module Node
// keeps for compatibility (http-parser-js and others replace it), pinned with Node itself (package.json
// engines). Used on both sides of a request: the caller's requests (h1-server-connection.ts) and the
// app's responses (app-h1-connection.ts). Checked at load: a Node without it fails at start, not mid-request.

export interface NativeParser {
  /** `lenient` 0: strict parsing (no llhttp leniency flags), as node:http without --insecure-http-parser. */
  initialize: (type: number, resource: object, maxHeaderSize?: number, lenient?: number) => void
  execute: (data: Buffer) => number | ParseError
  finish: () => ParseError | undefined
  remove: () => void
  free: () => void
  /** Reads a stream's handle in C++ (node:http's server does this): no Buffer and no 'data' event per read; kOnExecute follows each read. */
  consume: (handle: object) => void
  unconsume: () => void
  /** The bytes of the read being parsed (for what follows an Upgrade head, when consumed). */
  getCurrentBuffer: () => Buffer
  /** Deletes the native parser now (free() alone leaves it, and its buffers, to the garbage collector). */
  close: () => void
  [callback: number]: unknown
}

/** What execute() returns for bytes that are not HTTP/1.1: an llhttp code (HPE_...) and where it stopped. */
export interface ParseError extends Error { code: string, bytesParsed: number, reason?: string }

interface HttpCommon {
  HTTPParser: (new () => NativeParser) & {
    REQUEST: number
    RESPONSE: number
    kOnMessageBegin: number
    kOnHeaders: number
    kOnHeadersComplete: number
    kOnBody: number
    kOnMessageComplete: number
    kOnExecute: number
  }
  methods: string[]
}

const common = createRequire(import.meta.url)('_http_common') as HttpCommon
export const { HTTPParser, methods } = common
/**
 * Releases a parser that is done with (its connection closed), the way node:http does for a parser
 * it does not pool: after the current tick, since this may run inside one of its callbacks. Left to
 * the garbage collector, a parser per closed connection held its native memory: 60 MB more peak RSS
 * at 500 new connections a second (issue 21).
 */
export function releaseParser (parser: NativeParser): void {
  setImmediate(() => { parser.remove(); parser.free(); parser.close() })
}

/** A socket's native stream (TCPWrap, TLSWrap), which a parser can read directly. */
interface StreamHandle { isStreamBase?: boolean, _consumed?: boolean, reading?: boolean, readStart: () => number, readStop: () => number }

/**
 * A parser reading a socket's handle in C++, as node:http's server reads its connections: no Buffer,
 * stream push and 'data' event per read (issue 21); `onExecute` follows each read. End of stream and
 * errors still reach the socket. Bytes the socket had already read still come through its 'data'
 * listener, which must be attached first (it also starts the reading).
 */
export class SocketReader {
  private handle: StreamHandle | undefined
  private readonly parser: NativeParser
  private readonly socket: Socket
  private stopped = false

  constructor (parser: NativeParser, socket: Socket, onExecute: (ret: number | ParseError) => void) {
    this.parser = parser
    this.socket = socket
    const handle = (socket as unknown as { _handle?: StreamHandle | null })._handle
    if (handle?.isStreamBase !== true || handle._consumed === true) return
    handle._consumed = true
    parser.consume(handle)
    parser[HTTPParser.kOnExecute] = onExecute
    this.handle = handle
  }

  /** Stops or restarts reading (backpressure): on a consumed handle, pausing the socket's stream alone would not stop it. */
  reading (on: boolean): void {
    if (on === !this.stopped) return
    this.stopped = !on
    const handle = this.handle
    if (!on) {
      this.socket.pause()
      if (handle !== undefined && handle.reading === true) { handle.reading = false; handle.readStop() }
      return
    }
    if (handle !== undefined && handle.reading !== true) { handle.reading = true; handle.readStart() }
    this.socket.resume()
  }

  /** The handle back to the socket's own stream (node:http's unconsume()): before the socket changes owner, or once it is closed. */
  release (): void {
    const handle = this.handle
    if (handle === undefined) return
    this.handle = undefined
    this.parser.unconsume()
    handle._consumed = false
    if (handle.reading !== true && !this.socket.destroyed) { handle.reading = true; handle.readStart() }
  }
}

if (typeof HTTPParser !== 'function' || typeof HTTPParser.kOnMessageBegin !== 'number' || typeof HTTPParser.kOnExecute !== 'number' || typeof HTTPParser.kOnHeadersComplete !== 'number' || !Array.isArray(methods)) {
  throw new Error('this Node.js has no llhttp binding in _http_common')
}
