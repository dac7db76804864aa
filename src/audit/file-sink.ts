import { openSync, writeSync, closeSync, fstatSync, statSync, renameSync, fsyncSync, ftruncateSync, readSync, rmSync, readdirSync } from 'node:fs'
import { basename, dirname } from 'node:path'

// The decision-log file: every line written synchronously, so a line is in the kernel before the
// request it records is forwarded (a SIGKILL of the sidecar loses nothing it acted on), and rotated by
// size: the full file is renamed FILE.000001, FILE.000002, ... in order and a fresh FILE started.
// With maxFiles, only that many rotated files are kept (a size-limited emptyDir in a pod): the oldest
// goes, so the file is the local guarantee and the copy on stdout, shipped off the node, the record.
//
// A write either lands whole or not at all: a short or failed write (disk full, file size limit) is
// cut back off the file and thrown, so a half line never glues onto the next one. While writes fail,
// each attempt first reopens FILE if it was moved or removed (an operator freeing space), so writing
// resumes by itself.

export interface LastLine { text: string }

export class RotatingFileSink {
  private fd: number
  private size: number
  private readonly file: string
  private readonly maxBytes: number
  private readonly fsync: boolean
  private readonly maxFiles: number
  private failing = false
  /** The file ends in a line a crash cut short: the next line starts on a new one. */
  private torn: boolean

  constructor (file: string, maxBytes: number, opts: { fsync?: boolean, maxFiles?: number } = {}) {
    this.file = file
    this.maxBytes = maxBytes
    this.fsync = opts.fsync === true
    this.maxFiles = opts.maxFiles ?? 0
    this.fd = openSync(file, 'a', 0o640)
    this.size = fstatSync(this.fd).size
    // A line torn by a crash mid-write must not swallow the first line written now.
    this.torn = this.size > 0 && this.lastByte() !== 0x0a
  }

  /** The last complete line of the file as it was opened (a restarted sidecar's chain follows it). */
  lastLine (): LastLine | undefined {
    const len = Math.min(this.size, 256 * 1024)
    if (len === 0) return undefined
    const text = this.readTail(len).toString('utf8').replace(/\n+$/, '')
    const nl = text.lastIndexOf('\n')
    if (nl === -1 && len < this.size) return undefined
    return { text: text.slice(nl + 1) }
  }

  private lastByte (): number { return this.readTail(1)[0]! }

  private readTail (len: number): Buffer {
    const b = Buffer.alloc(len)
    const fd = openSync(this.file, 'r')
    try { readSync(fd, b, 0, len, this.size - len) } finally { closeSync(fd) }
    return b
  }

  /** pino calls write() with one serialized line (newline included). Throws if it could not be written whole. */
  write (line: string): boolean {
    if (this.failing) this.reopenIfMoved()
    const buf = Buffer.from(this.torn ? `\n${line}` : line)
    if (this.size > 0 && this.size + buf.length > this.maxBytes) this.rotate()
    let written = 0
    try {
      written = writeSync(this.fd, buf)
      if (written !== buf.length) throw Object.assign(new Error(`short write: ${written} of ${buf.length} bytes`), { code: 'ESHORTWRITE' })
      if (this.fsync) fsyncSync(this.fd)
    } catch (err) {
      this.failing = true
      try { ftruncateSync(this.fd, this.size) } catch { /* nothing more can be done; the verifier reports a torn line */ }
      throw err
    }
    this.failing = false
    this.torn = false
    this.size += buf.length
    return true
  }

  private reopenIfMoved (): void {
    let moved: boolean
    try { moved = statSync(this.file).ino !== fstatSync(this.fd).ino } catch { moved = true }
    if (!moved) return
    try { closeSync(this.fd) } catch { /* already gone */ }
    this.fd = openSync(this.file, 'a', 0o640)
    this.size = fstatSync(this.fd).size
  }

  private rotate (): void {
    fsyncSync(this.fd)
    closeSync(this.fd)
    // After the highest rotated file, never into a gap the deletion of old files left.
    const name = basename(this.file)
    const taken = readdirSync(dirname(this.file)).filter(f => f.startsWith(`${name}.`) && /^\d{6}$/.test(f.slice(name.length + 1))).map(f => Number(f.slice(name.length + 1)))
    const n = Math.max(0, ...taken) + 1
    renameSync(this.file, `${this.file}.${String(n).padStart(6, '0')}`)
    this.fd = openSync(this.file, 'a', 0o640)
    this.size = 0
    if (this.maxFiles > 0 && n > this.maxFiles) rmSync(`${this.file}.${String(n - this.maxFiles).padStart(6, '0')}`, { force: true })
  }

  flushSync (): void { fsyncSync(this.fd) }

  end (): void { try { fsyncSync(this.fd); closeSync(this.fd) } catch { /* already closed */ } }
}
