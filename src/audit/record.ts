import pino, { type DestinationStream } from 'pino'
import { randomBytes } from 'node:crypto'
import { RotatingFileSink } from './file-sink.ts'
import { lineHash, canonicalHash } from './line-hash.ts'
import { encodeLine } from './line-encoder.ts'
import { signCheckpoint, type Signer } from './checkpoint.ts'
import { DecisionLogUnavailableError } from '../errors.ts'

// The decision log: one JSON line per request, never sampled, written as its RFC 8785 canonical form
// (so a shipper that parses and re-emits a line with other key order or spacing leaves its hash as
// it was). Every line carries `chain` (this process's chain id), `seq` and `prev`, the SHA-256 (hex)
// of the previous line's canonical form; the first line's prev is 64 zeros. The first line is a
// genesis naming the writer (SPIFFE ID, certificate chain, checkpoint cadence) and the chain it
// follows (the last line of the file it appends to: a restart starts a new chain, never continues
// the old one). Every `checkpointEvery` lines or `checkpointIntervalMs`, and on close, a checkpoint
// line carries a JWS by the current SVID key over the (seq, hash) of the last line, so `audit verify`
// can prove with only the trust bundle that no line up to it was removed, inserted, edited or
// reordered. Each line is encoded in canonical form (line-encoder.ts) and hashed as it is appended,
// so seq/prev and the hash of the line written always belong together.
//
// The log is the guarantee: an allowed request's `admit` line is written (to the kernel) before the
// request is forwarded (with any decision lines still waiting: group commit, one write), and its
// `decision` line once it is answered, at the latest at the end of that event-loop turn. A line that cannot be written
// throws DecisionLogUnavailableError and puts the log in a failed state (the sidecar refuses with
// 503 and turns unready); it retries every second, and the first line written after a failure is a
// `resumed` line saying since when and how many requests were refused.

export const GENESIS_PREV = '0'.repeat(64)
/** The genesis line's `format`: chain ids and canonical hashing. Lines without one are format 1 (hashes over the bytes as written). */
export const LOG_FORMAT = 'gatehouse-decision-log/2'

/** Where a chain left off: named by the genesis of the chain that follows it. */
export interface ChainLink { chain: string | null, seq: number, hash: string }

export interface DecisionFields {
  requestId: string
  decision: 'allow' | 'deny'
  mode: 'enforce' | 'audit'
  enforced: boolean
  rule: string | null
  reason: string
  caller: string | null
  callee: string | null
  method: string
  path: string | null
  rawPath: string
  status: number
  durationMs: number
  policyRevision: string | null
  peerCertSerial: string | null
  /** What the shadow (mode: audit) rules would have decided, when the policy has any. */
  shadowDecision?: 'allow' | 'deny'
  shadowRule?: string | null
  /** Set when the app did not answer (502/504) or the request was malformed. */
  error?: string
  /** "tcp": an opaque TCP connection (method "TCP", path null) to app port `port`; absent for HTTP. */
  kind?: 'tcp'
  port?: number
  /** A TCP connection's close line: bytes from the caller to the app and back, and why it ended. */
  bytesIn?: number
  bytesOut?: number
  closeReason?: string
  /** Rule `quarantine`: the quarantine entry's reason. */
  quarantineReason?: string
}

export interface DecisionLogOptions {
  /** Write to stdout (default true); a test passes its own stream instead. */
  stdout?: boolean
  destination?: DestinationStream
  /** Also (or, with stdout false, only) write to this file, rotated at maxFileBytes; then the file is the guarantee and stdout a copy. */
  file?: string
  maxFileBytes?: number
  /** Rotated files kept (0: all). */
  maxFiles?: number
  /** fsync the file after every line (survives a machine crash, not only a process kill). */
  fsync?: boolean
  checkpointEvery?: number
  checkpointIntervalMs?: number
  /** The current identity, read at each checkpoint (so one after a rotation uses the new key). */
  signer: () => Signer | undefined
  onLine?: (kind: 'decision' | 'admit' | 'genesis' | 'checkpoint' | 'resumed') => void
  onCheckpointError?: (err: Error) => void
  /** Writing failed (once per failure), and writing works again. */
  onUnwritable?: (reason: string) => void
  onResumed?: (info: { failedSince: string, reason: string, refused: number }) => void
  /** Decision lines (of requests already answered) that a failed write took with it, by request id. */
  onLinesLost?: (requestIds: string[]) => void
}

const RETRY_MS = 1000
/** Decision lines waiting for the next write are written at once past this many (bounds the batch). */
const MAX_PENDING_LINES = 256

type LineKind = 'genesis' | 'admit' | 'decision' | 'checkpoint' | 'resumed'
interface Sink { write: (text: string) => unknown, flushSync?: () => void, end?: () => void }

export class DecisionLog {
  /** This process's chain: every line carries it, so many sidecars' lines can be told apart in one stream. */
  readonly chain = randomBytes(12).toString('base64url')
  private seq = 0
  private prev = GENESIS_PREV
  /** Where the chain stood at the last line that reached every sink: a failed write goes back here. */
  private committed = { seq: 0, prev: GENESIS_PREV }
  /**
   * Group commit: decision lines (written after the answer) wait here until the next admit line, a
   * checkpoint, or the end of the event-loop turn, and go in one write with it. Admit lines are never
   * held: an allowed request is forwarded only once its admit line, and every line before it, is written.
   */
  private pending = ''
  private pendingKinds: LineKind[] = []
  private pendingRequests: string[] = []
  private flushScheduled: NodeJS.Immediate | undefined
  private sinceCheckpoint = 0
  private lastCheckpointSeq = 0
  private genesisWritten = false
  private failure: { since: string, reason: string, refused: number } | undefined
  private retry: NodeJS.Timeout | undefined
  private readonly follows: ChainLink | null
  /** The guarantee first: a batch the first sink refused reaches no copy. */
  private readonly sinks: Sink[] = []
  private readonly stdout: ReturnType<typeof pino.destination> | undefined
  private readonly opts: DecisionLogOptions
  private readonly timer: NodeJS.Timeout
  private closed = false

  constructor (opts: DecisionLogOptions) {
    this.opts = opts
    let follows: ChainLink | null = null
    if (opts.file !== undefined) {
      const sink = new RotatingFileSink(opts.file, opts.maxFileBytes ?? 100 * 1024 * 1024, { fsync: opts.fsync === true, maxFiles: opts.maxFiles ?? 0 })
      follows = followed(sink.lastLine()?.text)
      this.sinks.push(sink)
    }
    if (opts.destination !== undefined) this.sinks.push(opts.destination as Sink)
    else if (opts.stdout !== false) {
      // Without a file, stdout is the guarantee and is written synchronously; as a copy beside the
      // file it is asynchronous (pino's sonic-boom), so a slow reader does not stall requests.
      this.stdout = pino.destination({ dest: 1, sync: opts.file === undefined, minLength: 0 })
      this.sinks.push(this.stdout)
    }
    this.follows = follows
    try { this.genesis() } catch { /* failed state: retried every second, nothing forwarded meanwhile */ }
    this.timer = setInterval(() => { if (this.sinceCheckpoint > 0 && this.failure === undefined) this.checkpoint() }, this.interval)
    this.timer.unref()
  }

  private get every (): number { return this.opts.checkpointEvery ?? 1000 }
  private get interval (): number { return this.opts.checkpointIntervalMs ?? 5000 }

  private genesis (): void {
    const signer = this.opts.signer()
    this.append({
      format: LOG_FORMAT,
      spiffeId: signer?.spiffeId ?? null,
      x5c: signer?.chainDers.map(d => d.toString('base64')) ?? [],
      checkpointEvery: this.every,
      checkpointIntervalMs: this.interval,
      pid: process.pid,
      follows: this.follows
    }, 'genesis')
    this.genesisWritten = true
  }

  /**
   * One line: encoded in canonical form, chained, and (except a decision line) written with every
   * line still pending. On failure nothing of the batch is written, seq and prev go back to the last
   * line written, and the log is failed.
   */
  private append (obj: Readonly<Record<string, unknown>>, msg: LineKind): void {
    const line = encodeLine({ chain: this.chain, seq: this.seq + 1, prev: this.prev, time: this.now(), msg }, obj)
    this.seq++
    this.prev = lineHash(line)
    this.pending += `${line}\n`
    this.pendingKinds.push(msg)
    if (msg !== 'decision') { this.commit(); return }
    // A decision line's request is already answered: a failed write of its batch is reported
    // (onLinesLost, by request id) and fails the log, but is not this caller's error.
    this.pendingRequests.push(obj.requestId as string)
    if (this.pendingKinds.length >= MAX_PENDING_LINES) this.commitQuietly()
    else this.flushScheduled ??= setImmediate(this.commitLater)
  }

  /** The time of a line: under load many lines share a millisecond, and toISOString() cost about a fifth of encoding one (issue 21). */
  private now (): string {
    const ms = Date.now()
    if (ms !== this.clock.ms) this.clock = { ms, iso: new Date(ms).toISOString() }
    return this.clock.iso
  }

  private clock = { ms: 0, iso: '' }

  private readonly commitLater = (): void => { this.flushScheduled = undefined; this.commitQuietly() }

  private commitQuietly (): void {
    try { this.commit() } catch { /* failed state; the lost lines were reported */ }
  }

  /** Writes what is pending, in one write per sink. Throws DecisionLogUnavailableError if the guarantee refused it. */
  private commit (): void {
    if (this.pending === '') return
    const text = this.pending
    const kinds = this.pendingKinds
    const requests = this.pendingRequests
    this.pending = ''
    this.pendingKinds = []
    this.pendingRequests = []
    try {
      this.sinks[0]?.write(text)
    } catch (err) {
      this.seq = this.committed.seq
      this.prev = this.committed.prev
      const reason = `${(err as NodeJS.ErrnoException).code ?? 'EIO'}: ${(err as Error).message}`
      if (this.failure === undefined) {
        this.failure = { since: new Date().toISOString(), reason, refused: 0 }
        this.retry = setInterval(() => { try { this.recover() } catch { /* still failing */ } }, RETRY_MS)
        this.retry.unref()
        this.opts.onUnwritable?.(reason)
      }
      if (requests.length > 0) this.opts.onLinesLost?.(requests)
      throw new DecisionLogUnavailableError(reason, { cause: err })
    }
    for (let i = 1; i < this.sinks.length; i++) this.sinks[i]!.write(text)
    this.committed = { seq: this.seq, prev: this.prev }
    for (const k of kinds) this.opts.onLine?.(k)
  }

  /** After a failure: the genesis if it never made it, then a `resumed` line; throws while writing still fails. */
  private recover (): void {
    const f = this.failure
    if (f === undefined) return
    if (!this.genesisWritten) this.genesis()
    this.append({ failedSince: f.since, reason: f.reason, refused: f.refused }, 'resumed')
    this.failure = undefined
    clearInterval(this.retry)
    this.opts.onResumed?.({ failedSince: f.since, reason: f.reason, refused: f.refused })
  }

  /** Writes one line, recovering first if the log had failed; counts the request refused if it cannot. */
  private guarded (obj: Readonly<Record<string, unknown>>, msg: 'admit' | 'decision'): number {
    try {
      this.recover()
      this.append(obj, msg)
    } catch (err) {
      if (this.failure !== undefined && msg === 'admit') this.failure.refused++
      throw err
    }
    const seq = this.seq
    // The cadence counts lines, admit lines included: the verifier bounds the lines between checkpoints.
    if (++this.sinceCheckpoint >= this.every) this.checkpoint()
    return seq
  }

  /** Why the log cannot be written now (for /readyz), or undefined. */
  problem (): string | undefined {
    const f = this.failure
    return f === undefined ? undefined : `decision log cannot be written since ${f.since} (${f.reason}); ${f.refused} request(s) refused`
  }

  /** Before an allowed request is forwarded: throws DecisionLogUnavailableError if the line could not be written. */
  admit (fields: DecisionFields): void {
    // A TCP connection may live for hours: its admit line is its record until the close line, so it carries the whole decision.
    const line = fields.kind === 'tcp'
      ? { requestId: fields.requestId, caller: fields.caller, callee: fields.callee, method: fields.method, path: fields.path, rule: fields.rule, kind: 'tcp', port: fields.port, decision: fields.decision, mode: fields.mode, policyRevision: fields.policyRevision, peerCertSerial: fields.peerCertSerial }
      : { requestId: fields.requestId, caller: fields.caller, callee: fields.callee, method: fields.method, path: fields.path, rule: fields.rule }
    this.guarded(line, 'admit')
  }

  /**
   * Queues the decision line (written with the next admit line, checkpoint, or at the end of this
   * event-loop turn); returns its seq (its place in this chain, for evidence). Throws
   * DecisionLogUnavailableError while the log is failed.
   */
  write (fields: DecisionFields): number {
    return this.guarded(fields as unknown as Record<string, unknown>, 'decision')
  }

  /** Signs the (seq, hash) of the last line written and appends the checkpoint right after it. */
  checkpoint (): Promise<void> {
    const signer = this.opts.signer()
    // Nothing written since the last checkpoint: another one would vouch for a checkpoint line only.
    if (signer === undefined || this.lastCheckpointSeq === this.seq || this.failure !== undefined) return Promise.resolve()
    const payload = { iss: signer.spiffeId, seq: this.seq, hash: this.prev, iat: Math.floor(Date.now() / 1000) }
    this.sinceCheckpoint = 0
    try {
      this.append({ covers: payload.seq, checkpointEvery: this.every, jws: signCheckpoint(signer, payload) }, 'checkpoint')
      this.lastCheckpointSeq = this.seq
    } catch (err) { this.opts.onCheckpointError?.(err as Error) } // the next checkpoint covers the gap
    return Promise.resolve()
  }

  /** A final checkpoint, then every line written to its destination: nothing is lost on SIGTERM. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.timer)
    clearInterval(this.retry)
    if (this.sinceCheckpoint > 0 || this.seq === 1) await this.checkpoint()
    this.flush()
    for (const s of this.sinks) if (s !== this.stdout) s.end?.()
    // stdout is written asynchronously (a slow reader must not stall requests). A write waiting on a
    // full pipe is retried later, and flushSync() would skip it: end() writes every line, in order.
    const out = this.stdout
    if (out !== undefined) await new Promise<void>(resolve => { out.once('close', resolve); out.once('error', () => { resolve() }); out.end() })
  }

  /** Writes every pending line, then asks each sink to flush (fsync a file). */
  flush (): void {
    if (this.flushScheduled !== undefined) { clearImmediate(this.flushScheduled); this.flushScheduled = undefined }
    this.commitQuietly()
    for (const s of this.sinks) {
      if (s === this.stdout) continue
      try { s.flushSync?.() } catch { /* a stream that is not ready or not flushable has nothing buffered */ }
    }
  }
}

/** The chain a new chain follows: the last line of the file it appends to, if that is a decision-log line. */
function followed (text: string | undefined): ChainLink | null {
  if (text === undefined) return null
  try {
    const rec = JSON.parse(text) as { chain?: unknown, seq?: unknown }
    if (typeof rec.seq !== 'number') return null
    // Format 1 had no chain id and hashed the bytes as written.
    return typeof rec.chain === 'string' ? { chain: rec.chain, seq: rec.seq, hash: canonicalHash(rec) } : { chain: null, seq: rec.seq, hash: lineHash(text) }
  } catch { return null }
}
