import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ServerResponse } from 'node:http'
import type { Logger } from '../log.ts'
import { watchFiles, type FileWatch } from '../file-watch.ts'
import type { SpiffeId } from '../spiffe/id.ts'
import { parseQuarantine, formatQuarantine, inForce, QuarantineList, type QuarantineEntry } from '../quarantine/list.ts'
import { signQuarantine, type QuarantineDocument } from '../quarantine/signed.ts'
import type { CaMaterial } from './ca-directory.ts'
import { callerOf } from '../policy/decide.ts'

// The CA's side of quarantine (docs/quarantine.md): DIR/quarantine.yaml is the one source (in
// Kubernetes a ConfigMap every replica mounts; no replica keeps state of its own). The CA watches it,
// refuses to issue or renew an SVID for anyone it holds, and publishes it signed with the issuer key
// at GET /v1/quarantine, long-polled by sidecars: `?revision=R&wait=S` answers as soon as the list
// is no longer R, or after S seconds (at most 30) with the same list.

export const QUARANTINE_FILE = 'quarantine.yaml'
const MAX_WAIT_S = 30
/** How often the CA polls the file: with the long poll, a change reaches sidecars within about this. */
export const QUARANTINE_POLL_MS = 250

export class QuarantineBook {
  private list = QuarantineList.EMPTY
  private signed: { jws: string, revision: string } | undefined
  private readonly waiters = new Set<{ res: ServerResponse, timer: NodeJS.Timeout }>()
  private watch: FileWatch | undefined
  private expiryTimer: NodeJS.Timeout | undefined
  private ca: CaMaterial
  private readonly logger: Logger

  constructor (ca: CaMaterial, logger: Logger) {
    this.ca = ca
    this.logger = logger
  }

  get file (): string { return join(this.ca.dir, QUARANTINE_FILE) }

  /** Loads the file now (missing = empty; invalid at start = empty, logged) and follows it. */
  start (intervalMs = QUARANTINE_POLL_MS): void {
    this.load(readOrEmpty(this.file), 'start')
    this.watch = watchFiles([this.file], intervalMs, ([bytes]) => { this.load(bytes?.toString('utf8') ?? '', 'file-change') }, { baseline: [readBytes(this.file)] })
  }

  /** New CA material (root rotation, issuer renewal): re-sign with the new issuer. */
  setCa (ca: CaMaterial): void {
    this.ca = ca
    this.publish()
  }

  holds (id: SpiffeId, now = Date.now()): QuarantineEntry | undefined {
    return this.list.holds(callerOf(id), now)
  }

  get current (): QuarantineList { return this.list }

  private load (text: string, trigger: string): void {
    let entries: QuarantineEntry[]
    try { entries = parseQuarantine(text, this.file) } catch (err) {
      this.logger.error({ event: 'quarantine.invalid', file: this.file, trigger, problems: (err as { problems?: string[] }).problems ?? [(err as Error).message], keptRevision: this.list.revision }, 'invalid quarantine list; keeping the last good one')
      return
    }
    const before = new Map(this.list.entries.map(e => [e.id, e]))
    const after = new Map(entries.map(e => [e.id, e]))
    // The CA's own log is the record of who was quarantined, when, why and by whom.
    for (const [id, e] of after) if (!before.has(id)) this.logger.warn({ event: 'quarantine.added', spiffeId: id, reason: e.reason, by: e.by, added: e.added, expires: e.expires }, 'identity quarantined')
    for (const [id, e] of before) if (!after.has(id)) this.logger.warn({ event: 'quarantine.removed', spiffeId: id, reason: e.reason }, 'identity released from quarantine')
    this.list = new QuarantineList(entries)
    this.publish()
    this.logger.info({ event: 'quarantine.loaded', trigger, revision: this.list.revision, entries: entries.length }, 'quarantine list loaded')
  }

  /** Signs the entries in force now, answers every waiting poll, and re-publishes at the next expiry. */
  private publish (): void {
    const now = Date.now()
    const entries = inForce(this.list.entries, now)
    const doc: QuarantineDocument = { trustDomain: this.ca.trustDomain, revision: new QuarantineList(entries).revision, iat: Math.floor(now / 1000), entries }
    this.signed = { jws: signQuarantine(doc, this.ca.issuerKey, this.ca.issuer.der), revision: doc.revision }
    for (const w of this.waiters) { clearTimeout(w.timer); this.answer(w.res) }
    this.waiters.clear()
    clearTimeout(this.expiryTimer)
    const next = Math.min(...this.list.entries.map(e => e.expires === undefined ? Infinity : Date.parse(e.expires)).filter(t => t > now))
    if (Number.isFinite(next)) { this.expiryTimer = setTimeout(() => { this.publish() }, Math.min(next - now + 10, 2 ** 31 - 1)); this.expiryTimer.unref() }
  }

  private answer (res: ServerResponse): void {
    if (res.writableEnded || res.destroyed) return
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
    res.end(JSON.stringify({ revision: this.signed!.revision, jws: this.signed!.jws }))
  }

  /** GET /v1/quarantine[?revision=R&wait=S]. */
  serve (url: URL, res: ServerResponse): void {
    const known = url.searchParams.get('revision')
    const wait = Math.min(MAX_WAIT_S, Math.max(0, Number(url.searchParams.get('wait') ?? 0) || 0))
    if (known === null || known !== this.signed!.revision || wait === 0) { this.answer(res); return }
    const entry = { res, timer: setTimeout(() => { this.waiters.delete(entry); this.answer(res) }, wait * 1000) }
    this.waiters.add(entry)
    res.once('close', () => { clearTimeout(entry.timer); this.waiters.delete(entry) })
  }

  stop (): void {
    this.watch?.stop()
    clearTimeout(this.expiryTimer)
    for (const w of this.waiters) { clearTimeout(w.timer); this.answer(w.res) }
    this.waiters.clear()
  }
}

function readBytes (file: string): Buffer | undefined {
  try { return readFileSync(file) } catch { return undefined }
}
const readOrEmpty = (file: string): string => readBytes(file)?.toString('utf8') ?? ''

/** Edits DIR/quarantine.yaml in one step (write aside, rename): what `ca quarantine add/remove` and auto-quarantine do. */
export function editQuarantine (dir: string, edit: (entries: QuarantineEntry[]) => QuarantineEntry[]): QuarantineEntry[] {
  const file = join(dir, QUARANTINE_FILE)
  const entries = edit(parseQuarantine(readOrEmpty(file), file))
  writeFileSync(`${file}.tmp`, formatQuarantine(entries), { mode: 0o644 })
  renameSync(`${file}.tmp`, file)
  return entries
}

export function readQuarantine (dir: string): QuarantineEntry[] {
  const file = join(dir, QUARANTINE_FILE)
  return parseQuarantine(readOrEmpty(file), file)
}
