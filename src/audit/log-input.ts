import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import { createGunzip } from 'node:zlib'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'

// Decision-log lines as they arrive on an auditor's desk, whatever carried them: plain JSON lines
// (the sidecar's file), the kubelet's CRI format (`<time> stdout F <line>`, long lines cut into `P`
// parts and joined back here), Docker's json-file and Fluent Bit's `{"log": "..."}` wrapping (also
// `{"log": {...}}` once a shipper has parsed the line), gzip-compressed rotated files, and streams
// where the sidecar's operational log, other containers' lines or many sidecars' decision logs are
// mixed in. A decision-log record is told apart without guessing: it is a JSON object with a
// numeric `seq`, a 64-hex `prev` and one of the decision log's own `msg` values; anything else is
// counted and skipped.

export const RECORD_KINDS: ReadonlySet<string> = new Set(['genesis', 'decision', 'admit', 'checkpoint', 'resumed'])

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
const isHex64 = (v: unknown): boolean => typeof v === 'string' && v.length === 64 && /^[0-9a-f]{64}$/.test(v)

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
  const raw = createReadStream(file)
  return await isGzip(file) ? raw.pipe(createGunzip()) : raw
}

/** One file's decision-log records, in file order. */
export async function * readRecords (file: string, stats: InputStats): AsyncGenerator<LogRecord> {
  const input = await openText(file)
  // Partial lines (CRI `P`, Docker's json-file without a final newline) per stream, until the last part.
  const partial = new Map<string, string>()
  let lineNo = 0
  try {
    for await (const physical of createInterface({ input, crlfDelay: Infinity })) {
      lineNo++
      let text = physical
      let parsed: unknown
      // A JSON line is never a CRI line: skip the regex for it (most lines of a plain log file).
      const cri = physical.startsWith('{') ? null : CRI.exec(physical)
      if (cri !== null) {
        const [, , stream, tag, content] = cri
        const joined = (partial.get(stream!) ?? '') + (content ?? '')
        if (tag === 'P') { partial.set(stream!, joined); continue }
        partial.delete(stream!)
        text = joined
      } else if (physical.startsWith('{') && physical.includes('"log"')) {
        const wrapped = tryParse(physical)
        if (typeof wrapped === 'object' && wrapped !== null && 'log' in wrapped && !('seq' in wrapped)) {
          const log = (wrapped as { log: unknown, stream?: unknown }).log
          if (typeof log === 'string') {
            const w = wrapped as { stream?: unknown, _p?: unknown, logtag?: unknown }
            const key = `docker:${String(w.stream ?? '')}`
            const joined = (partial.get(key) ?? '') + log
            // Fluent Bit's CRI parsers keep the runtime's P/F tag (`_p`, `logtag`); Docker's json-file
            // ends every whole line with "\n", and a part without one continues in the next entry.
            const tag = w._p ?? w.logtag
            const isPart = tag !== undefined ? tag === 'P' : !joined.endsWith('\n') && w.stream !== undefined
            if (isPart) { partial.set(key, joined); continue }
            partial.delete(key)
            text = joined.replace(/\r?\n$/, '')
          } else {
            parsed = log
            text = JSON.stringify(log)
          }
        } else if (wrapped !== undefined) {
          parsed = wrapped // parsed once: a record (or any other JSON) that merely mentions "log"
        }
      }
      if (parsed === undefined) {
        if (!text.startsWith('{')) { stats.skipped++; continue }
        parsed = tryParse(text)
        if (parsed === undefined) {
          if (LOOKS_LIKE_RECORD.test(text)) stats.damaged.push({ file, lineNo })
          else stats.skipped++
          continue
        }
      }
      if (!isRecord(parsed)) { stats.skipped++; continue }
      yield { file, lineNo, text, rec: parsed }
    }
  } finally {
    input.destroy()
  }
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
  for (const file of await orderFiles(files)) yield * readRecords(file, stats)
}
