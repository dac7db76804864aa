import { lineHash, canonicalHash } from './line-hash.ts'
import type { TrustBundle } from '../spiffe/bundle.ts'
import { GENESIS_PREV, type ChainLink } from './record.ts'
import { verifyCheckpoint } from './checkpoint.ts'
import type { LogRecord } from './log-input.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { BREAK_VERDICT, type BreakKind, type ChainReport } from './verify-report.ts'
import { HashWindow } from './hash-window.ts'

// The checks of one chain, line by line, for `gatehouse audit verify` (verify.ts splits the records
// into chains and links restarted ones). What each break means is in verify.ts.

export interface VerifyOptions { slackLines?: number, requireGenesis?: boolean }

/** An export (export.ts): segments of chains, each to be proven by its own last checkpoint; `isMatch` tells the query's lines from context. */
export interface ExportMode { isMatch: (rec: Record<string, unknown>) => boolean }

/** Checkpoint cadence assumed for a chain whose genesis (which states it) is not present. */
const DEFAULT_CADENCE = 1000

export class ChainCheck {
  readonly r: ChainReport
  private expected = 0
  /**
   * The chain's last line: its hash as written, and its text as UTF-8 in a buffer reused for every
   * line (read back and parsed only if a shipper re-serialized the line). Kept off the JS heap: with
   * many chains interleaved, every chain's last line is alive at every minor GC, and V8 grows the
   * young generation by what survives.
   */
  private lastRaw: string | undefined
  private lastBytes = Buffer.alloc(2048)
  private lastLength = 0
  private cadence = DEFAULT_CADENCE
  private readonly uncovered = new HashWindow()
  /** Headless: callees seen before the first checkpoint names the writer. */
  private readonly earlyCallees = new Map<string, { seq: number, file: string, line: number }>()
  private pendingGap: { expected: number, seq: number, file: string, lineNo: number } | undefined
  private readonly signers = new Set<string>()
  private readonly opts: VerifyOptions
  private readonly exported: ExportMode | undefined
  /** The first seq of the run of contiguous lines being checked: the chain's first line, or in an export the segment's. */
  private segmentStart = 0
  /** Export: matching lines no valid checkpoint has covered yet. */
  private openMatches: number[] = []

  constructor (chain: string, format: 1 | 2, opts: VerifyOptions, exported?: ExportMode) {
    this.opts = opts
    this.exported = exported
    this.r = { chain, format, verdict: 'VERIFIED', writer: null, lines: 0, firstSeq: 0, lastSeq: 0, genesis: false, verifiedFrom: null, verifiedThrough: 0, checkpoints: 0, signers: [], follows: null, files: [] }
    if (exported !== undefined) this.r.exported = { segments: 0, matches: 0, proven: 0 }
  }

  fail (kind: BreakKind, lr: LogRecord | { file: string, lineNo: number }, seq: number | null, message: string): void {
    this.r.break ??= { kind, seq, file: lr.file, line: lr.lineNo, message }
  }

  /** The hash of the previous line, if `prev` is it: as written, or (format 2) as canonical form after a shipper re-serialized it. */
  private confirm (prev: unknown): string | undefined {
    if (this.lastRaw === undefined) return undefined
    if (prev === this.lastRaw) return this.lastRaw
    if (this.r.format === 2) { const c = canonicalHash(this.lastRecord()); if (prev === c) return c }
    return undefined
  }

  private lastRecord (): unknown { return JSON.parse(this.lastBytes.toString('utf8', 0, this.lastLength)) }

  /** The hash of the chain's last line (for the chain that follows it). */
  lastHash (): string | undefined { return this.lastRaw === undefined ? undefined : this.r.format === 2 ? canonicalHash(this.lastRecord()) : this.lastRaw }

  /** Checks one line; a promise only for a checkpoint (its signature), which must settle before the next line. */
  add (lr: LogRecord, bundle: TrustBundle): Promise<void> | undefined {
    const { rec } = lr
    const seq = rec.seq as number
    if (this.pendingGap !== undefined) {
      if (seq === this.pendingGap.expected) {
        const g = this.pendingGap
        this.pendingGap = undefined
        this.fail('inserted-or-reordered', g, g.seq, `seq ${g.seq} where seq ${g.expected} was expected, and seq ${g.expected} comes later (${lr.file}:${lr.lineNo}): a line was inserted or lines were reordered`)
      }
      return
    }
    if (this.r.break !== undefined) return
    if (!this.r.files.includes(lr.file)) this.r.files.push(lr.file)

    if (this.r.lines === 0) {
      this.r.firstSeq = seq
      this.segmentStart = seq
      if (rec.msg === 'genesis' && seq === 1 && rec.prev === GENESIS_PREV) {
        this.r.genesis = true
        // The writer is the one workload whose key may sign checkpoints and whose decisions the lines
        // record. A genesis that names none (or no valid SPIFFE ID) proves nothing about either.
        const named = typeof rec.spiffeId === 'string' ? SpiffeId.tryParse(rec.spiffeId) : undefined
        if (named === undefined || named.toString() !== rec.spiffeId) {
          this.fail('signer-unknown', lr, seq, `the genesis line names no writer (spiffeId ${JSON.stringify(rec.spiffeId ?? null).slice(0, 120)}): nothing ties the checkpoints to the workload whose decisions the log records, so it cannot be verified`)
          return
        }
        this.r.writer = named.toString()
        this.cadence = typeof rec.checkpointEvery === 'number' ? rec.checkpointEvery : Infinity
        const f = rec.follows as ChainLink | null | undefined
        if (f !== null && typeof f === 'object' && typeof f.seq === 'number' && typeof f.hash === 'string') this.r.follows = { chain: typeof f.chain === 'string' ? f.chain : null, seq: f.seq, hash: f.hash }
      } else if (rec.msg === 'genesis' && seq === 1) {
        this.fail('edited', lr, seq, `seq 1 (genesis) has prev ${String(rec.prev).slice(0, 16)}..., not 64 zeros: the genesis line was edited`)
        return
      }
      // else: the head of the chain is not here (rotated away): proven from the first valid checkpoint on.
    } else if (seq > this.expected && this.exported !== undefined) {
      // An export's next segment: tied to the chain by its own checkpoint, not by the line before it.
      if (!this.endSegment(lr)) return
      this.segmentStart = seq
    } else if (seq > this.expected) {
      // A jump forward is also the first sign of a reordering: a removal only if the expected line does not turn up.
      this.pendingGap = { expected: this.expected, seq, file: lr.file, lineNo: lr.lineNo }
      return
    } else if (seq < this.expected) {
      this.fail('inserted-or-reordered', lr, seq, `seq ${seq} where seq ${this.expected} was expected: a line was inserted or lines were reordered`)
      return
    } else {
      const h = this.confirm(rec.prev)
      if (h === undefined) {
        this.fail('edited', lr, seq, `seq ${seq}: prev does not match the hash of seq ${seq - 1}: seq ${seq - 1} was edited (or replaced)`)
        return
      }
      this.uncovered.set(seq - 1, h)
    }

    if (rec.msg === 'decision' || rec.msg === 'admit') {
      // Every decision is one of the writer's own sidecar: callee is always its own ID.
      const callee = typeof rec.callee === 'string' ? rec.callee : JSON.stringify(rec.callee ?? null)
      if (this.r.writer !== null && rec.callee !== this.r.writer) {
        this.fail('callee-not-signer', lr, seq, `seq ${seq} (${String(rec.msg)}) records a decision for callee ${JSON.stringify(rec.callee ?? null)}, but the log is ${this.r.writer}'s (its genesis names it, and only its key may sign the checkpoints): a line claiming another workload's decisions`)
        return
      }
      if (this.r.writer === null && !this.earlyCallees.has(callee)) this.earlyCallees.set(callee, { seq, file: lr.file, line: lr.lineNo })
    }
    if (this.exported?.isMatch(rec) === true) { this.openMatches.push(seq); this.r.exported!.matches++ }
    this.lastRaw = lineHash(lr.text)
    if (lr.text.length * 3 > this.lastBytes.length) this.lastBytes = Buffer.alloc(lr.text.length * 3) // room for any UTF-8 form
    this.lastLength = this.lastBytes.write(lr.text)
    this.r.lines++
    this.r.lastSeq = seq
    this.expected = seq + 1

    if (rec.msg === 'checkpoint') return this.checkpoint(lr, seq, bundle)
    else {
      const base = Math.max(this.r.verifiedThrough, this.segmentStart - 1)
      // By count only: time-based cadence would raise false alarms whenever a busy host delays the
      // checkpoint timer. So a rewrite of the last <= 2*cadence lines shows as an unverified tail.
      if (seq - base > 2 * this.cadence + (this.opts.slackLines ?? 64)) {
        this.fail('missing-checkpoint', lr, seq, `${seq - base} lines since ${this.r.verifiedThrough > 0 || this.r.genesis ? `the last valid checkpoint (seq ${this.r.verifiedThrough})` : `the first line present (seq ${this.r.firstSeq})`}; the writer checkpoints every ${this.cadence}: checkpoints were removed or the chain was rewritten`)
      }
    }
  }

  private async checkpoint (lr: LogRecord, seq: number, bundle: TrustBundle): Promise<void> {
    const checked = await verifyCheckpoint(String(lr.rec.jws), bundle)
    if (!checked.ok) {
      this.fail(checked.kind === 'untrusted' ? 'untrusted-signer' : 'forged-checkpoint', lr, seq, `checkpoint at seq ${seq}: ${checked.message}`)
      return
    }
    const { payload, signer } = checked
    if (this.r.writer === null) {
      // Headless: the first valid checkpoint names the writer, and the lines before it must be its own.
      for (const [callee, at] of this.earlyCallees) {
        if (callee !== signer) {
          this.fail('callee-not-signer', { file: at.file, lineNo: at.line }, at.seq, `seq ${at.seq} records a decision for callee ${callee.startsWith('"') || callee === 'null' ? callee : JSON.stringify(callee)}, but the checkpoints of this log are signed by ${signer}: a line claiming another workload's decisions`)
          return
        }
      }
      this.earlyCallees.clear()
      this.r.writer = signer
      if (typeof lr.rec.checkpointEvery === 'number') this.cadence = lr.rec.checkpointEvery
    } else if (signer !== this.r.writer) {
      this.fail('forged-checkpoint', lr, seq, `checkpoint at seq ${seq} is signed by ${signer}, but the log was started by ${this.r.writer}`)
      return
    }
    if (payload.seq < this.segmentStart) return // vouches for a line no longer here: proves nothing present
    if (this.uncovered.get(payload.seq) !== payload.hash) {
      this.fail('forged-checkpoint', lr, seq, `checkpoint at seq ${seq} vouches for seq ${payload.seq} with a hash that line does not have`)
      return
    }
    const at = new Date(payload.iat * 1000).toISOString()
    this.signers.add(`${signer} (${checked.serial})`)
    this.r.checkpoints++
    this.r.firstCheckpoint ??= { seq, signer, at }
    this.r.lastCheckpoint = { seq, at }
    this.r.verifiedFrom ??= this.r.genesis ? 1 : this.r.firstSeq
    // The checkpoint line itself is proven by its own signature; it extends the verified run only
    // when it directly follows what it covers (lines written while it was being signed are not).
    const through = payload.seq === seq - 1 ? seq : payload.seq
    this.r.verifiedThrough = Math.max(this.r.verifiedThrough, through)
    // Keep the hash at `through`: a later checkpoint may vouch for it again (a timer checkpoint
    // followed by one on demand), and that is a genuine claim.
    this.uncovered.dropBelow(through)
    if (this.exported !== undefined) {
      const covered = this.openMatches.filter(m => m <= payload.seq).length
      this.r.exported!.proven += covered
      this.openMatches = this.openMatches.slice(covered)
    }
  }

  /** Export: the segment that ends here must have proven every match it holds (a removed checkpoint would leave them bare). */
  private endSegment (lr: LogRecord): boolean {
    this.r.exported!.segments++
    if (this.openMatches.length === 0) return true
    const [first, last] = [this.openMatches[0]!, this.openMatches.at(-1)!]
    this.fail('unsigned', lr, first, `seq ${first}${last > first ? `..${last}` : ''}: ${this.openMatches.length} line(s) the export's query matches, and no checkpoint in the export covers them (the segment ends at seq ${this.r.lastSeq}): they are not proven`)
    return false
  }

  finish (): void {
    if (this.exported !== undefined && this.r.break === undefined) {
      this.r.exported!.segments++
      // Context lines after the last checkpoint prove nothing and claim nothing: only an uncovered match is a tail.
      if (this.openMatches.length > 0) this.r.unverifiedTail = { fromSeq: this.openMatches[0]!, toSeq: this.openMatches.at(-1)!, lines: this.openMatches.length }
      this.r.verifiedThrough = Math.min(this.r.verifiedThrough, this.r.lastSeq)
      this.r.signers = [...this.signers]
      if (this.r.writer === null) this.fail('unsigned', { file: this.r.files[0] ?? '', lineNo: 0 }, this.r.firstSeq, `seq ${this.r.firstSeq}..${this.r.lastSeq}: no valid checkpoint in the export, so nothing ties these lines to a workload`)
      this.settle()
      return
    }
    const g = this.pendingGap
    if (g !== undefined) this.fail('removed', g, g.seq, `seq ${g.expected}${g.seq - 1 > g.expected ? `..${g.seq - 1}` : ''} missing before seq ${g.seq}: ${g.seq - g.expected} line(s) removed`)
    this.r.signers = [...this.signers]
    if (this.r.break === undefined && this.r.writer === null) {
      this.fail('unsigned', { file: this.r.files[0] ?? '', lineNo: 0 }, this.r.firstSeq, `seq ${this.r.firstSeq}..${this.r.lastSeq}: no genesis and no valid checkpoint, so nothing ties these lines to a workload`)
    }
    if (this.r.break === undefined && this.r.verifiedThrough < this.r.lastSeq) {
      const lines = this.uncovered.countAbove(this.r.verifiedThrough) + 1
      this.r.unverifiedTail = { fromSeq: this.r.verifiedThrough + 1, toSeq: this.r.lastSeq, lines: Math.min(lines, this.r.lastSeq - this.r.verifiedThrough) }
    }
    this.settle()
  }

  settle (): void {
    this.r.verdict = this.r.break !== undefined
      ? BREAK_VERDICT[this.r.break.kind]
      : this.r.unverifiedTail !== undefined ? 'UNSIGNED TAIL' : !this.r.genesis && this.opts.requireGenesis === true && this.exported === undefined ? 'NO GENESIS' : 'VERIFIED'
  }
}
