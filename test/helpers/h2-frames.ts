import { connect, type TLSSocket } from 'node:tls'
import type { SvidFiles, Tap } from './mesh.ts'

// A raw HTTP/2 client for attack tests: frames and HPACK written by hand, so a test can send what
// node:http2 (nghttp2) refuses to produce (rapid resets, endless CONTINUATION, HPACK bombs, bad
// pseudo-headers), and a frame reader that records what the server answered (GOAWAY, RST_STREAM,
// HEADERS and their :status) per stream.

export const T = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const
export const F = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const
/** RFC 9113 7 error codes; ERR[code] names one in assertion messages. */
export const E = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, STREAM_CLOSED: 5, FRAME_SIZE_ERROR: 6, REFUSED_STREAM: 7, CANCEL: 8, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11 } as const
export const ERR: Record<number, string> = Object.fromEntries(Object.entries(E).map(([k, v]) => [v, k]))
export const S = { HEADER_TABLE_SIZE: 1, ENABLE_PUSH: 2, MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5, MAX_HEADER_LIST_SIZE: 6 } as const

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

// --- frames (RFC 9113 4.1: 24-bit length, 8-bit type, 8-bit flags, 31-bit stream id) ---

export function frame (type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9)
  h.writeUIntBE(payload.length, 0, 3)
  h[3] = type
  h[4] = flags
  h.writeUInt32BE(streamId & 0x7fffffff, 5)
  return Buffer.concat([h, payload])
}
export const headers = (id: number, block: Buffer, o: { endStream?: boolean, endHeaders?: boolean } = {}): Buffer =>
  frame(T.HEADERS, ((o.endStream ?? true) ? F.END_STREAM : 0) | ((o.endHeaders ?? true) ? F.END_HEADERS : 0), id, block)
export const continuation = (id: number, block: Buffer, endHeaders = false): Buffer => frame(T.CONTINUATION, endHeaders ? F.END_HEADERS : 0, id, block)
export const data = (id: number, payload: Buffer | string, endStream = true): Buffer => frame(T.DATA, endStream ? F.END_STREAM : 0, id, Buffer.from(payload))
export const rstStream = (id: number, code: number = E.CANCEL): Buffer => frame(T.RST_STREAM, 0, id, u32(code))
export const settingsAck = (): Buffer => frame(T.SETTINGS, F.ACK, 0)
export const windowUpdate = (id: number, increment: number): Buffer => frame(T.WINDOW_UPDATE, 0, id, u32(increment))
export function settings (entries: Array<[number, number]> = []): Buffer {
  const p = Buffer.alloc(entries.length * 6)
  entries.forEach(([id, v], i) => { p.writeUInt16BE(id, i * 6); p.writeUInt32BE(v, i * 6 + 2) })
  return frame(T.SETTINGS, 0, 0, p)
}
function u32 (n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b }

// --- HPACK encoder (RFC 7541), never Huffman, so the bytes on the wire are exactly what a test means ---

/** An integer with an N-bit prefix; `mask` holds the representation's leading bits. */
export function hpackInt (value: number, prefixBits: number, mask: number): Buffer {
  const max = (1 << prefixBits) - 1
  if (value < max) return Buffer.from([mask | value])
  const out = [mask | max]
  for (value -= max; value >= 128; value = Math.floor(value / 128)) out.push((value % 128) | 0x80)
  out.push(value)
  return Buffer.from(out)
}
const str = (s: string | Buffer): Buffer => { const b = Buffer.from(s as string, 'latin1'); return Buffer.concat([hpackInt(b.length, 7, 0), b]) }
/** Literal header field without indexing, new name (0x00): never touches either side's dynamic table. */
export const literal = (name: string, value: string | Buffer): Buffer => Buffer.concat([Buffer.from([0x00]), str(name), str(value)])
/** Literal with incremental indexing, new name (0x40): the decoder stores it at dynamic index 62. */
export const literalIndexed = (name: string, value: string | Buffer): Buffer => Buffer.concat([Buffer.from([0x40]), str(name), str(value)])
/** Indexed field (0x80): one or two bytes that decode to a whole stored header (the HPACK bomb's lever). */
export const indexed = (index: number): Buffer => hpackInt(index, 7, 0x80)
/** Dynamic table size update (0x20), allowed only at the start of a header block. */
export const tableSizeUpdate = (size: number): Buffer => hpackInt(size, 5, 0x20)

/** A request's header block, fields in the given order (pseudo-headers are not reordered or checked). */
export function block (fields: Array<[string, string]>): Buffer { return Buffer.concat(fields.map(([n, v]) => literal(n, v))) }
/** The four pseudo-headers of a GET plus `extra`, as literals. */
export const request = (path: string, extra: Array<[string, string]> = [], method = 'GET'): Buffer =>
  block([[':method', method], [':scheme', 'https'], [':path', path], [':authority', 'gatehouse.test'], ...extra])

// --- response :status, decoded without a full HPACK decoder ---
// The client's SETTINGS advertise HEADER_TABLE_SIZE 0, so the server may not index anything in its
// dynamic table: :status is always the first field (RFC 9113 8.3), either a static entry (8-14) or a
// literal whose name is static index 8..14 and whose value is three digits, raw or Huffman-coded.
const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 }
const HUFFMAN_DIGITS: Record<string, string> = { '00000': '0', '00001': '1', '00010': '2', '011001': '3', '011010': '4', '011011': '5', '011100': '6', '011101': '7', '011110': '8', '011111': '9' }
export function responseStatus (b: Buffer): number | undefined {
  let i = 0
  while (i < b.length && (b[i]! & 0xe0) === 0x20) i++ // size updates (the 0 we asked for fits one byte)
  const first = b[i]
  if (first === undefined) return undefined
  if ((first & 0x80) !== 0) return STATIC_STATUS[first & 0x7f]
  const nameIndex = (first & 0x40) !== 0 ? first & 0x3f : first & 0x0f
  if (STATIC_STATUS[nameIndex] === undefined) return undefined
  const huffman = (b[i + 1]! & 0x80) !== 0
  const value = b.subarray(i + 2, i + 2 + (b[i + 1]! & 0x7f))
  if (!huffman) return Number(value.toString('latin1'))
  // Digit codes are 5 or 6 bits and prefix-free: try 5, then 6; the 1-bit padding is left over.
  let bits = [...value].map(x => x.toString(2).padStart(8, '0')).join('')
  let out = ''
  while (out.length < 3) {
    const n = HUFFMAN_DIGITS[bits.slice(0, 5)] !== undefined ? 5 : 6
    const d = HUFFMAN_DIGITS[bits.slice(0, n)]
    if (d === undefined) return undefined
    out += d
    bits = bits.slice(n)
  }
  return Number(out)
}

// --- the connection ---

export interface Frame { type: number, flags: number, streamId: number, payload: Buffer }

export class H2Conn {
  readonly socket: TLSSocket
  readonly frames: Frame[] = []
  closed = false
  error: string | undefined
  private buf = Buffer.alloc(0)
  private readonly ackSettings: boolean
  constructor (socket: TLSSocket, ackSettings = true) {
    this.socket = socket
    this.ackSettings = ackSettings
    socket.on('data', (c: Buffer) => { this.buf = Buffer.concat([this.buf, c]); this.parse() })
    socket.on('error', (err: NodeJS.ErrnoException) => { this.error = err.code ?? err.message })
    socket.on('close', () => { this.closed = true })
  }

  private parse (): void {
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3)
      if (this.buf.length < 9 + len) return
      const f: Frame = { type: this.buf[3]!, flags: this.buf[4]!, streamId: this.buf.readUInt32BE(5) & 0x7fffffff, payload: this.buf.subarray(9, 9 + len) }
      this.buf = this.buf.subarray(9 + len)
      this.frames.push(f)
      // A well-behaved peer acks the server's SETTINGS; until it does, nghttp2 enforces them more
      // softly (e.g. a stream over MAX_CONCURRENT_STREAMS is refused alone, not the connection).
      if (this.ackSettings && f.type === T.SETTINGS && (f.flags & F.ACK) === 0) this.write(settingsAck())
    }
  }

  /** Writes unless the connection is gone; false once the kernel buffer is full (see flood()). */
  write (...bufs: Buffer[]): boolean { return this.closed || this.socket.destroyed ? false : this.socket.write(bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs)) }

  /** Writes `count` frames made by `make(i)`, waiting for drain, stopping early if the server closes. Returns how many were written. */
  async flood (count: number, make: (i: number) => Buffer): Promise<number> {
    for (let i = 0; i < count; i++) {
      if (this.closed || this.socket.destroyed) return i
      if (!this.socket.write(make(i))) {
        await new Promise<void>(resolve => { const done = (): void => { this.socket.off('drain', done); this.socket.off('close', done); resolve() }; this.socket.on('drain', done); this.socket.on('close', done) })
      }
    }
    return count
  }

  goaway (): { lastStreamId: number, code: number, debug: string } | undefined {
    const f = this.frames.find(x => x.type === T.GOAWAY)
    return f === undefined ? undefined : { lastStreamId: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4), debug: f.payload.subarray(8).toString('utf8') }
  }

  /** RST_STREAM error code the server sent on `id`, if any. */
  rst (id: number): number | undefined { const f = this.frames.find(x => x.type === T.RST_STREAM && x.streamId === id); return f?.payload.readUInt32BE(0) }
  rsts (): Array<{ streamId: number, code: number }> { return this.frames.filter(x => x.type === T.RST_STREAM).map(x => ({ streamId: x.streamId, code: x.payload.readUInt32BE(0) })) }

  /** :status of the server's response HEADERS on `id` (undefined: none, or not decodable). */
  status (id: number): number | undefined {
    const f = this.frames.find(x => x.type === T.HEADERS && x.streamId === id)
    if (f === undefined) return undefined
    let p = f.payload
    if ((f.flags & F.PADDED) !== 0) p = p.subarray(1, p.length - p[0]!)
    if ((f.flags & F.PRIORITY) !== 0) p = p.subarray(5)
    return responseStatus(p)
  }

  /** Some answer on `id`: response HEADERS, RST_STREAM, or a GOAWAY (the stream will get nothing else). */
  answered (id: number): boolean { return this.closed || this.goaway() !== undefined || this.frames.some(x => x.streamId === id && (x.type === T.HEADERS || x.type === T.RST_STREAM)) }

  async until (check: () => boolean, ms = 3000): Promise<boolean> {
    const deadline = Date.now() + ms
    while (!check() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
    return check()
  }

  close (): void { this.socket.destroy() }
}

export interface H2ConnectOptions { port: number, host?: string, ca: string, svid: Pick<SvidFiles, 'chainPem' | 'keyPem'>, settings?: Array<[number, number]>, ackSettings?: boolean }

/**
 * mTLS with ALPN h2 only; rejects if the server picks no h2 (so a test can tell "no HTTP/2 yet").
 * Sends the preface and SETTINGS (HEADER_TABLE_SIZE 0, ENABLE_PUSH 0, plus `settings`). The socket
 * is destroyed in `t`'s teardown.
 */
export async function connectH2 (t: Tap, o: H2ConnectOptions): Promise<H2Conn> {
  const socket = await new Promise<TLSSocket>((resolve, reject) => {
    const s = connect({ host: o.host ?? '127.0.0.1', port: o.port, ca: o.ca, cert: o.svid.chainPem, key: o.svid.keyPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined })
    s.once('secureConnect', () => { s.off('error', reject); resolve(s) })
    s.once('error', reject)
  })
  t.teardown(() => { socket.destroy() })
  if (socket.alpnProtocol !== 'h2') { socket.destroy(); throw new Error(`server did not negotiate h2 (ALPN: ${String(socket.alpnProtocol)})`) }
  const conn = new H2Conn(socket, o.ackSettings)
  conn.write(PREFACE, settings([[S.HEADER_TABLE_SIZE, 0], [S.ENABLE_PUSH, 0], ...(o.settings ?? [])]))
  return conn
}
