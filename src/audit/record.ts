import pino, { type Logger, type DestinationStream } from 'pino'
import { RotatingFileSink } from './file-sink.ts'
import { lineHash } from './line-hash.ts'
import { signCheckpoint, type Signer } from './checkpoint.ts'

// The decision log: one JSON line per request, never sampled. Every line carries `seq` and `prev`,
// the SHA-256 (hex) of the previous line exactly as written (without its newline); the first line's
// prev is 64 zeros. The first line is a genesis line naming the writer (SPIFFE ID, certificate
// chain, checkpoint cadence). Every `checkpointEvery` lines or `checkpointIntervalMs`, and on close,
// a checkpoint line carries a JWS by the current SVID key over the (seq, hash) of the last line, so
// `audit verify` can prove with only the trust bundle that no line up to it was removed, inserted,
// edited or reordered. pino calls mixin() and then streamWrite() synchronously within one log call,
// so seq/prev and the hash of the line written always belong together.

export const GENESIS_PREV = '0'.repeat(64)

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
}

export interface DecisionLogOptions {
  /** Write to stdout (default true); a test passes its own stream instead. */
  stdout?: boolean
  destination?: DestinationStream
  /** Also (or, with stdout false, only) write to this file, rotated at maxFileBytes. */
  file?: string
  maxFileBytes?: number
  checkpointEvery?: number
  checkpointIntervalMs?: number
  /** The current identity, read at each checkpoint (so one after a rotation uses the new key). */
  signer: () => Signer | undefined
  onLine?: (kind: 'decision' | 'genesis' | 'checkpoint') => void
  onCheckpointError?: (err: Error) => void
}

export class DecisionLog {
  private seq = 0
  private prev = GENESIS_PREV
  private sinceCheckpoint = 0
  private lastCheckpointSeq = 0
  private readonly logger: Logger
  private readonly sinks: Array<{ flushSync?: () => void, end?: () => void }> = []
  private readonly stdout: ReturnType<typeof pino.destination> | undefined
  private readonly opts: DecisionLogOptions
  private readonly timer: NodeJS.Timeout
  private closed = false

  constructor (opts: DecisionLogOptions) {
    this.opts = opts
    const streams: pino.StreamEntry[] = []
    if (opts.destination !== undefined) streams.push({ stream: opts.destination })
    else if (opts.stdout !== false) {
      this.stdout = pino.destination({ dest: 1, sync: false, minLength: 0 })
      streams.push({ stream: this.stdout })
    }
    if (opts.file !== undefined) streams.push({ stream: new RotatingFileSink(opts.file, opts.maxFileBytes ?? 100 * 1024 * 1024) as unknown as DestinationStream })
    for (const s of streams) if (s.stream !== this.stdout) this.sinks.push(s.stream as { flushSync?: () => void })
    this.logger = pino({
      base: undefined,
      level: 'info',
      timestamp: pino.stdTimeFunctions.isoTime,
      mixin: () => ({ seq: ++this.seq, prev: this.prev }),
      hooks: {
        streamWrite: (line: string) => {
          this.prev = lineHash(line.endsWith('\n') ? line.slice(0, -1) : line)
          return line
        }
      }
    }, streams.length === 1 ? streams[0]!.stream : pino.multistream(streams))
    const signer = opts.signer()
    this.logger.info({
      spiffeId: signer?.spiffeId ?? null,
      x5c: signer?.chainDers.map(d => d.toString('base64')) ?? [],
      checkpointEvery: this.every,
      checkpointIntervalMs: this.interval,
      pid: process.pid
    }, 'genesis')
    opts.onLine?.('genesis')
    this.timer = setInterval(() => { if (this.sinceCheckpoint > 0) this.checkpoint() }, this.interval)
    this.timer.unref()
  }

  private get every (): number { return this.opts.checkpointEvery ?? 1000 }
  private get interval (): number { return this.opts.checkpointIntervalMs ?? 5000 }

  write (fields: DecisionFields): void {
    this.logger.info(fields, 'decision')
    this.opts.onLine?.('decision')
    if (++this.sinceCheckpoint >= this.every) this.checkpoint()
  }

  /** Signs the (seq, hash) of the last line written and appends the checkpoint right after it. */
  checkpoint (): Promise<void> {
    const signer = this.opts.signer()
    // Nothing written since the last checkpoint: another one would vouch for a checkpoint line only.
    if (signer === undefined || this.lastCheckpointSeq === this.seq) return Promise.resolve()
    const payload = { iss: signer.spiffeId, seq: this.seq, hash: this.prev, iat: Math.floor(Date.now() / 1000) }
    this.sinceCheckpoint = 0
    try {
      this.logger.info({ covers: payload.seq, jws: signCheckpoint(signer, payload) }, 'checkpoint')
      this.lastCheckpointSeq = this.seq
      this.opts.onLine?.('checkpoint')
    } catch (err) { this.opts.onCheckpointError?.(err as Error) } // the next checkpoint covers the gap
    return Promise.resolve()
  }

  /** A final checkpoint, then every line written to its destination: nothing is lost on SIGTERM. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.timer)
    if (this.sinceCheckpoint > 0 || this.seq === 1) await this.checkpoint()
    this.flush()
    for (const s of this.sinks) s.end?.()
    // stdout is written asynchronously (a slow reader must not stall requests). A write waiting on a
    // full pipe is retried later, and flushSync() would skip it: end() writes every line, in order.
    const out = this.stdout
    if (out !== undefined) await new Promise<void>(resolve => { out.once('close', resolve); out.once('error', () => { resolve() }); out.end() })
  }

  flush (): void {
    for (const s of this.sinks) {
      try { s.flushSync?.() } catch { /* a stream that is not ready or not flushable has nothing buffered */ }
    }
  }
}
