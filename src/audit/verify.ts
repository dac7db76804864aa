import { lineHash } from './line-hash.ts'
import type { TrustBundle } from '../spiffe/bundle.ts'
import { GENESIS_PREV } from './record.ts'
import { verifyCheckpoint } from './checkpoint.ts'
import { readLogLines } from './read-lines.ts'
import { SpiffeId } from '../spiffe/id.ts'

// `gatehouse audit verify`: walks the hash chain across all files and checks every checkpoint against
// the trust bundle. It stops at the first break and says exactly what it saw there: a removed line
// (seq jumps), an inserted or reordered line (seq goes back or repeats), an edited line (the next
// line's prev does not match), a forged checkpoint (signature, chain or signer wrong), a missing
// checkpoint (far more lines than the genesis cadence allows), and finally any tail no checkpoint
// covers yet (reported as unverified: written, but not yet provable).
//
// Whose log it is: the genesis line must name the writer (a SPIFFE ID), every checkpoint must be
// signed by that workload's SVID, and every decision line's callee must be that workload. Without
// the last two, any workload of the trust domain could write a log of "A's decisions" and sign it
// with its own key. A genesis naming no writer (spiffeId null) is never VERIFIED: it is reported as
// signer-unknown (exit 1), since nothing ties its checkpoints to the workload whose decisions it holds.

export type BreakKind = 'not-json' | 'no-genesis' | 'signer-unknown' | 'removed' | 'inserted-or-reordered' | 'edited' | 'forged-checkpoint' | 'callee-not-signer' | 'missing-checkpoint'

export interface VerifyReport {
  ok: boolean
  lines: number
  writer: string | null
  checkpoints: number
  signers: string[]
  /** Every line up to and including this seq is covered by a valid checkpoint. */
  verifiedThrough: number
  break?: { kind: BreakKind, seq: number | null, file: string, line: number, message: string }
  unverifiedTail?: { fromSeq: number, toSeq: number, lines: number }
}


const seqOf = (text: string): unknown => { try { return (JSON.parse(text) as { seq?: unknown }).seq } catch { return undefined } }

export async function verifyLog (files: string[], bundle: TrustBundle, opts: { slackLines?: number } = {}): Promise<VerifyReport> {
  const report: VerifyReport = { ok: false, lines: 0, writer: null, checkpoints: 0, signers: [], verifiedThrough: 0 }
  let expectedSeq = 1
  let prevHash = GENESIS_PREV
  let cadence = Infinity
  // Hashes of lines not yet covered by a checkpoint (a checkpoint may land a few lines after what it covers).
  const uncovered = new Map<number, string>()
  const signers = new Set<string>()
  const fail = (kind: BreakKind, seq: number | null, at: { file: string, lineNo: number }, message: string): VerifyReport => {
    report.break = { kind, seq, file: at.file, line: at.lineNo, message }
    report.signers = [...signers]
    return report
  }

  const lines = readLogLines(files)
  for await (const line of lines) {
    let rec: { seq?: unknown, prev?: unknown, msg?: unknown, spiffeId?: unknown, callee?: unknown, checkpointEvery?: unknown, checkpointIntervalMs?: unknown, jws?: unknown, time?: unknown }
    try { rec = JSON.parse(line.text) as typeof rec } catch {
      return fail('not-json', null, line, `${line.file}:${line.lineNo} is not a JSON line: it was edited or corrupted`)
    }
    const seq = typeof rec.seq === 'number' ? rec.seq : NaN
    if (expectedSeq === 1) {
      if (rec.msg !== 'genesis' || seq !== 1 || rec.prev !== GENESIS_PREV) {
        return fail('no-genesis', Number.isNaN(seq) ? null : seq, line, `the log starts at seq ${String(rec.seq)} (${String(rec.msg)}), not at its genesis line: the head of the log was removed`)
      }
      // The writer is the one workload whose key may sign checkpoints and whose decisions the lines
      // record. A genesis that names none (or no valid SPIFFE ID) proves nothing about either.
      const named = typeof rec.spiffeId === 'string' ? SpiffeId.tryParse(rec.spiffeId) : undefined
      if (named === undefined || named.toString() !== rec.spiffeId) {
        return fail('signer-unknown', seq, line, `the genesis line names no writer (spiffeId ${JSON.stringify(rec.spiffeId ?? null).slice(0, 120)}): nothing ties the checkpoints to the workload whose decisions the log records, so it cannot be verified`)
      }
      report.writer = named.toString()
      cadence = typeof rec.checkpointEvery === 'number' ? rec.checkpointEvery : Infinity
    } else if (seq > expectedSeq) {
      // A jump forward is also the first sign of a reordering (or of a later line copied in early):
      // it is a removal only if the expected line does not turn up further on.
      for await (const later of lines) {
        if (seqOf(later.text) === expectedSeq) {
          return fail('inserted-or-reordered', seq, line, `seq ${seq} where seq ${expectedSeq} was expected, and seq ${expectedSeq} comes later (${later.file}:${later.lineNo}): a line was inserted or lines were reordered`)
        }
      }
      return fail('removed', seq, line, `seq ${expectedSeq}${seq - 1 > expectedSeq ? `..${seq - 1}` : ''} missing before seq ${seq}: ${seq - expectedSeq} line(s) removed`)
    } else if (seq < expectedSeq || Number.isNaN(seq)) {
      return fail('inserted-or-reordered', Number.isNaN(seq) ? null : seq, line, `seq ${String(rec.seq)} where seq ${expectedSeq} was expected: a line was inserted or lines were reordered`)
    } else if (rec.prev !== prevHash) {
      return fail('edited', seq, line, `seq ${seq}: prev does not match the hash of seq ${seq - 1} as written: seq ${seq - 1} was edited (or replaced)`)
    }
    if (seq !== 1 && rec.msg !== 'checkpoint' && rec.callee !== report.writer) {
      // Every other line is a decision of the writer's own sidecar: callee is always its own ID.
      return fail('callee-not-signer', seq, line, `seq ${seq} (${String(rec.msg)}) records a decision for callee ${JSON.stringify(rec.callee ?? null)}, but the log is ${String(report.writer)}'s (its genesis names it, and only its key may sign the checkpoints): a line claiming another workload's decisions`)
    }
    const hash = lineHash(line.text)
    uncovered.set(seq, hash)
    report.lines++

    if (rec.msg === 'checkpoint') {
      let checked
      try {
        checked = await verifyCheckpoint(String(rec.jws), bundle)
      } catch (err) {
        return fail('forged-checkpoint', seq, line, `checkpoint at seq ${seq} does not verify: ${(err as Error).message}`)
      }
      const { payload, signer } = checked
      if (signer !== report.writer) {
        return fail('forged-checkpoint', seq, line, `checkpoint at seq ${seq} is signed by ${signer}, but the log was started by ${report.writer}`)
      }
      if (uncovered.get(payload.seq) !== payload.hash) {
        return fail('forged-checkpoint', seq, line, `checkpoint at seq ${seq} vouches for seq ${payload.seq} with a hash that line does not have`)
      }
      signers.add(`${signer} (${checked.serial})`)
      report.checkpoints++
      // The checkpoint line itself is proven by its own signature; it extends the verified run only
      // when it directly follows what it covers (lines written while it was being signed are not).
      const through = payload.seq === seq - 1 ? seq : payload.seq
      report.verifiedThrough = Math.max(report.verifiedThrough, through)
      // Keep the hash at `through`: a later checkpoint may vouch for it (two checkpoints in a row,
      // e.g. a timer checkpoint followed by one on demand), and that is a genuine claim.
      for (const s of uncovered.keys()) if (s < through) uncovered.delete(s)
    } else if (seq - report.verifiedThrough > 2 * cadence + (opts.slackLines ?? 64)) {
      // By count only: time-based cadence would raise false alarms whenever a busy host delays the
      // checkpoint timer. So a rewrite of the last <= 2*cadence lines shows as an unverified tail (exit 3).
      // An attacker who rewrites the chain from some point on cannot sign checkpoints for it.
      return fail('missing-checkpoint', seq, line, `${seq - report.verifiedThrough} lines since the last valid checkpoint (seq ${report.verifiedThrough}); the writer checkpoints every ${cadence}: checkpoints were removed or the chain was rewritten`)
    }
    prevHash = hash
    expectedSeq = seq + 1
  }
  if (report.lines === 0) return { ...report, break: { kind: 'no-genesis', seq: null, file: files[0] ?? '', line: 0, message: 'the log is empty' } }
  report.signers = [...signers]
  const last = expectedSeq - 1
  if (report.verifiedThrough < last) {
    const tailLines = [...uncovered.keys()].filter(s => s > report.verifiedThrough).length
    report.unverifiedTail = { fromSeq: report.verifiedThrough + 1, toSeq: last, lines: tailLines }
  }
  report.ok = report.break === undefined && report.unverifiedTail === undefined
  return report
}
