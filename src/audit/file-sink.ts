import { openSync, writeSync, closeSync, fstatSync, renameSync, existsSync, fsyncSync } from 'node:fs'

// The decision-log file: every line written synchronously (a crash or SIGKILL loses nothing that was
// acknowledged), rotated by size. Rotation renames the full file to FILE.000001, FILE.000002, ... in
// order and starts a fresh FILE; the hash chain simply continues into it, so `audit verify` checks
// the files together as one log.

export class RotatingFileSink {
  private fd: number
  private size: number
  private readonly file: string
  private readonly maxBytes: number

  constructor (file: string, maxBytes: number) {
    this.file = file
    this.maxBytes = maxBytes
    this.fd = openSync(file, 'a', 0o640)
    this.size = fstatSync(this.fd).size
  }

  /** pino calls write() with one serialized line (newline included). */
  write (line: string): boolean {
    const bytes = Buffer.byteLength(line)
    if (this.size > 0 && this.size + bytes > this.maxBytes) this.rotate()
    writeSync(this.fd, line)
    this.size += bytes
    return true
  }

  private rotate (): void {
    fsyncSync(this.fd)
    closeSync(this.fd)
    let n = 1
    while (existsSync(`${this.file}.${String(n).padStart(6, '0')}`)) n++
    renameSync(this.file, `${this.file}.${String(n).padStart(6, '0')}`)
    this.fd = openSync(this.file, 'a', 0o640)
    this.size = 0
  }

  flushSync (): void { fsyncSync(this.fd) }

  end (): void { try { fsyncSync(this.fd); closeSync(this.fd) } catch { /* already closed */ } }
}
