import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import { createGunzip } from 'node:zlib'
import type { Readable } from 'node:stream'

// Decision-log lines as they arrive on an auditor's desk, whatever carried them: plain JSON lines
// (the sidecar's file), the kubelet's CRI format (`<time> stdout F <line>`, long lines cut into `P`
// parts and joined back here), Docker's json-file and Fluent Bit's `{"log": "..."}` wrapping (also
// `{"log": {...}}` once a shipper has parsed the line), gzip-compressed rotated files, and streams
// where the sidecar's operational log, other containers' lines or many sidecars' decision logs are
// mixed in. A decision-log record is told apart without guessing: it is a JSON object with a
// numeric `seq`, a 64-hex `prev` and one of the decision log's own `msg` values; anything else is
// counted and skipped.

export const RECORD_KINDS: ReadonlySet<string> = new Set(['genesis', 'decision', 'admit', 'checkpoint', 'resumed', 'export'])

export interface LogRecord {
  file: string
  /** Physical line of the file (the last one, for a record joined from parts). */
  lineNo: number
  /** The record's JSON text as it came (format 1 hashes exactly this). */
  text: string
  rec: Record<string, unknown>
}

export interface InputStats {
  /** Lines that are not decision-log records (operational log, other containers, blank). */
  skipped: number
  /** Lines that look like decision-log records but are not valid JSON: damaged or edited. */
  damaged: Array<{ file: string, lineNo: number }>
}

/** Keys only decision-log lines carry (canonical order puts callee and chain first): a line with one that is not JSON was damaged. */
const LOOKS_LIKE_RECORD = /"(chain|prev|seq|callee|requestId|covers|jws)":/
const CRI = /^(\S+) (stdout|stderr) ([PF]) ?(.*)$/
/** 64 lower-case hex digits (a loop: a regex test cost a third of a microsecond, on every line). */
function isHex64 (v: unknown): boolean {
  if (typeof v !== 'string' || v.length !== 64) return false
  for (let i = 0; i < 64; i++) {
    const c = v.charCodeAt(i)
    if ((c < 48 || c > 57) && (c < 97 || c > 102)) return false
  }
  return true
}

export const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && typeof (v as { seq?: unknown }).seq === 'number' &&
  isHex64((v as { prev?: unknown }).prev) && RECORD_KINDS.has(String((v as { msg?: unknown }).msg))

async function isGzip (file: string): Promise<boolean> {
  const fh = await open(file, 'r')
  try {
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(2), 0, 2, 0)
    return bytesRead === 2 && buffer[0] === 0x1f && buffer[1] === 0x8b
  } finally { await fh.close() }
}

async function openText (file: string): Promise<Readable> {
  // Checked before the stream exists: a file that cannot be opened is a rejection here, not an
  // 'error' event on a stream nobody listens to yet.
  const gzip = await isGzip(file)
  const raw = createReadStream(file, { highWaterMark: CHUNK_BYTES })
  if (!gzip) return raw
  const gunzip = createGunzip({ chunkSize: CHUNK_BYTES })
  raw.on('error', (err) => { gunzip.destroy(err) })
  return raw.pipe(gunzip)
}

/** Read size: 1 MiB (read into memory outside the JS heap) holds about 1,700 lines, so the per-chunk costs (a read, an await) are spread thin. */
const CHUNK_BYTES = 1024 * 1024

/**
 * A file's physical lines, one batch per chunk read: what readline with crlfDelay Infinity gives
 * (\n, \r\n and a lone \r each end a line; a last line without a newline counts), without its
 * per-line event and promise. Each batch decodes its lines as it is iterated, straight from the
 * bytes (a line is cut at a \n byte, which is never inside a UTF-8 sequence), so no chunk-sized
 * string is made and only the line at hand is alive. Iterate a batch before asking for the next.
 */
async function * lineBatches (input: Readable): AsyncGenerator<Iterable<string>> {
  let rest: Buffer | undefined
  for await (const chunk of input as AsyncIterable<Buffer>) {
    let buf = chunk
    if (rest !== undefined) {
      // The line the last chunk left unfinished, joined with this chunk's first line only (not a copy of the chunk).
      const nl = chunk.indexOf(10)
      if (nl === -1) { rest = Buffer.concat([rest, chunk]); continue }
      const head = Buffer.concat([rest, chunk.subarray(0, nl + 1)])
      yield lines(head, head.length)
      buf = chunk.subarray(nl + 1)
    }
    // Up to the last \n: a \r after it may be half a \r\n, and waits for the next chunk.
    const end = buf.lastIndexOf(10) + 1
    rest = end < buf.length ? buf.subarray(end) : undefined
    if (end > 0) yield lines(buf, end)
  }
  if (rest !== undefined) yield splitText(rest.toString('utf8'))
}

/** The lines of buf up to `end` (just after a \n). */
function lines (buf: Buffer, end: number): Iterable<string> {
  const cr = buf.indexOf(13)
  return cr === -1 || cr >= end ? splitLf(buf, end) : splitText(buf.toString('utf8', 0, end - 1))
}

function * splitLf (buf: Buffer, end: number): Generator<string> {
  for (let from = 0; from < end;) {
    const nl = buf.indexOf(10, from)
    yield buf.toString('utf8', from, nl)
    from = nl + 1
  }
}

/** The lines of text with a \r in it (or the last, unterminated line); a \r at its very end is that of a \r\n. */
function splitText (text: string): string[] { return (text.endsWith('\r') ? text.slice(0, -1) : text).split(/\r\n|\n|\r/) }

/** Turns physical lines into decision-log records: unwraps CRI and Docker / Fluent Bit lines and joins their parts. */
class RecordReader {
  /** Partial lines (CRI `P`, Docker's json-file without a final newline) per stream, until the last part. */
  private readonly partial = new Map<string, string>()
  private readonly file: string
  private readonly stats: InputStats
  lineNo = 0
  constructor (file: string, stats: InputStats) { this.file = file; this.stats = stats }

  /** The record on the next physical line, or undefined (skipped, damaged, or a part of a longer line). */
  next (physical: string): LogRecord | undefined {
    const { file, stats, partial } = this
    const lineNo = ++this.lineNo
    let text = physical
    let parsed: unknown
    if (physical.startsWith('{')) {
      // A JSON line (never a CRI line): a record, or a shipper's wrapping of one. Parsed once either way.
      const wrapped = tryParse(physical)
      if (wrapped === undefined) return this.damaged(physical, lineNo)
      if (typeof wrapped !== 'object' || wrapped === null || !('log' in wrapped) || 'seq' in wrapped) parsed = wrapped
      else {
        const log = (wrapped as { log: unknown, stream?: unknown }).log
        if (typeof log === 'string') {
          const w = wrapped as { stream?: unknown, _p?: unknown, logtag?: unknown }
          const key = `docker:${String(w.stream ?? '')}`
          const joined = (partial.get(key) ?? '') + log
          // Fluent Bit's CRI parsers keep the runtime's P/F tag (`_p`, `logtag`); Docker's json-file
          // ends every whole line with "\n", and a part without one continues in the next entry.
          const tag = w._p ?? w.logtag
          const isPart = tag !== undefined ? tag === 'P' : !joined.endsWith('\n') && w.stream !== undefined
          if (isPart) { partial.set(key, joined); return undefined }
          partial.delete(key)
          text = joined.replace(/\r?\n$/, '')
        } else {
          parsed = log
          text = JSON.stringify(log)
        }
      }
    } else {
      const cri = CRI.exec(physical)
      if (cri !== null) {
        const [, , stream, tag, content] = cri
        const joined = (partial.get(stream!) ?? '') + (content ?? '')
        if (tag === 'P') { partial.set(stream!, joined); return undefined }
        partial.delete(stream!)
        text = joined
      }
    }
    if (parsed === undefined) {
      if (!text.startsWith('{')) { stats.skipped++; return undefined }
      parsed = tryParse(text)
      if (parsed === undefined) return this.damaged(text, lineNo)
    }
    if (!isRecord(parsed)) { stats.skipped++; return undefined }
    return { file, lineNo, text, rec: parsed }
  }

  /** A line that is not JSON: damaged if it looks like a decision-log record, else someone else's line. */
  private damaged (text: string, lineNo: number): undefined {
    if (LOOKS_LIKE_RECORD.test(text)) this.stats.damaged.push({ file: this.file, lineNo })
    else this.stats.skipped++
    return undefined
  }
}

/**
 * One file's decision-log records, in file order, a batch per chunk read. Each batch parses its
 * lines as it is iterated (one record alive at a time, so little survives a scavenge): iterate it
 * before asking for the next.
 */
export async function * readRecordBatches (file: string, stats: InputStats): AsyncGenerator<Iterable<LogRecord>> {
  const input = await openText(file)
  const reader = new RecordReader(file, stats)
  try {
    for await (const lines of lineBatches(input)) yield records(reader, lines)
  } finally {
    input.destroy()
  }
}

function * records (reader: RecordReader, lines: Iterable<string>): Generator<LogRecord> {
  for (const line of lines) {
    const r = reader.next(line)
    if (r !== undefined) yield r
  }
}

/** One file's decision-log records, in file order. */
export async function * readRecords (file: string, stats: InputStats): AsyncGenerator<LogRecord> {
  for await (const batch of readRecordBatches(file, stats)) yield * batch
}

function tryParse (text: string): unknown {
  try { return JSON.parse(text) } catch { return undefined }
}

/**
 * The files in the order their records were written: by the time of each file's first record (a
 * rotated file before the one that replaced it, whatever their names), then by its first seq.
 */
export async function orderFiles (files: string[]): Promise<string[]> {
  const keyed = await Promise.all(files.map(async file => {
    const stats: InputStats = { skipped: 0, damaged: [] }
    for await (const r of readRecords(file, stats)) return { file, time: String(r.rec.time ?? ''), seq: Number(r.rec.seq) }
    return { file, time: '\uffff', seq: Number.MAX_SAFE_INTEGER }
  }))
  return keyed.sort((a, b) => a.time < b.time ? -1 : a.time > b.time ? 1 : a.seq - b.seq).map(k => k.file)
}

/** Every record of every file, files in written order. */
export async function * readLogRecords (files: string[], stats: InputStats): AsyncGenerator<LogRecord> {
  for await (const batch of readLogRecordBatches(files, stats)) yield * batch
}

/** The same, in batches: one await per chunk read instead of one per record (`audit verify` on millions of lines). */
export async function * readLogRecordBatches (files: string[], stats: InputStats): AsyncGenerator<Iterable<LogRecord>> {
  for (const file of await orderFiles(files)) yield * readRecordBatches(file, stats)
}
