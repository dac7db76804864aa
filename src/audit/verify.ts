import type { TrustBundle } from '../spiffe/bundle.ts'
import { readLogRecordBatches, type InputStats } from './log-input.ts'
import { VERDICT_EXIT, SEVERITY, type Break, type VerifyReport } from './verify-report.ts'
import { EXPORT_FORMAT, EXPORT_MSG, filtersFromHeader, type ExportHeader } from './export.ts'
import { lineFilter } from './query.ts'
import { ChainCheck, type ExportMode, type VerifyOptions } from './chain-check.ts'

const isRecordObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

// `gatehouse audit verify`: splits the records (log-input.ts reads them from any file, wrapping or
// mix) into chains, one per sidecar process (`chain`; format-1 logs, which have none, split at each
// genesis), and walks each chain's hashes, checking every checkpoint against the trust bundle. A
// chain stops at its first break and says exactly what it saw there:
//   removed (a seq jumps and the missing one never turns up: GAP), inserted-or-reordered (a seq goes
//   back, repeats, or the missing one turns up later: REORDERED), edited (a prev does not match the
//   line before it: TAMPERED), forged-checkpoint (signature, certificate or payload wrong: TAMPERED),
//   untrusted-signer (a good signature by a certificate the bundle does not vouch for: UNTRUSTED),
//   callee-not-signer (a line claims another workload's decision: TAMPERED), missing-checkpoint
//   (far more lines than the cadence allows: TAMPERED), signer-unknown / unsigned (nothing ties the
//   lines to a workload: NOT VERIFIED).
// A chain whose head was rotated away verifies from its first valid checkpoint: every line present
// before it is tied to it by the hashes. Whose log it is: every checkpoint must be signed by the
// writer its genesis names (or, headless, by the first checkpoint's signer), and every decision and
// admit line's callee must be that workload: otherwise any workload of the trust domain could write
// "A's decisions" and sign them with its own key.
// A restarted sidecar's chain names the chain it follows and where that one ended: a chain cut
// short before that point is a GAP, and an unsigned tail of the old chain (a SIGKILL) is vouched for
// by the new chain's checkpoints, signed by the same workload.

export { VERDICT_EXIT, BREAK_VERDICT, type BreakKind, type Verdict, type Break, type ChainReport, type VerifyReport } from './verify-report.ts'
export type { VerifyOptions } from './chain-check.ts'

export async function verifyLog (files: string[], bundle: TrustBundle, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const stats: InputStats = { skipped: 0, damaged: [] }
  const chains = new Map<string, ChainCheck>()
  let records = 0
  // Format 1 has no chain id: its chains are told apart by their genesis lines.
  let legacy = 0
  let exported: ExportMode | undefined
  let header: ExportHeader | undefined
  // Streams: a batch of records per chunk read, each checked and dropped; a chain keeps only its
  // last line and the hashes its next checkpoint may vouch for.
  for await (const batch of readLogRecordBatches(files, stats)) {
    // Each batch parses as it is iterated: one record at a time.
    for (const lr of batch) {
      if (lr.rec.msg === EXPORT_MSG) {
        // An export's header comes first, alone: anywhere else it is not one (and proves nothing).
        if (records === 0 && header === undefined && isRecordObject(lr.rec.export) && lr.rec.export.format === EXPORT_FORMAT) {
          header = lr.rec.export as unknown as ExportHeader
          exported = { isMatch: lineFilter(filtersFromHeader(isRecordObject(header.query) ? header.query : {})) }
        } else stats.skipped++
        continue
      }
      records++
      let key: string
      if (typeof lr.rec.chain === 'string') key = lr.rec.chain
      else {
        if (lr.rec.msg === 'genesis' && lr.rec.seq === 1 && (chains.get(`format-1#${legacy}`)?.r.lines ?? 0) > 0) legacy++
        key = `format-1#${legacy}`
      }
      let c = chains.get(key)
      if (c === undefined) chains.set(key, c = new ChainCheck(key, typeof lr.rec.chain === 'string' ? 2 : 1, opts, exported))
      const signed = c.add(lr, bundle)
      if (signed !== undefined) await signed
    }
  }
  for (const c of chains.values()) c.finish()
  // An export's segments are not whole chains: what a restart says about the chain before it cannot be checked.
  if (exported === undefined) link(chains)

  const list = [...chains.values()].map(c => c.r)
  const input = { files, records, skipped: stats.skipped, damaged: stats.damaged.length }
  if (list.length === 0) {
    const brk: Break = { kind: 'no-genesis', seq: null, file: files[0] ?? '', line: 0, message: `no decision-log lines in ${files.length} file(s) (${stats.skipped} other lines skipped)` }
    return { ok: false, verdict: 'NOT VERIFIED', exitCode: VERDICT_EXIT['NOT VERIFIED'], lines: 0, writer: null, checkpoints: 0, signers: [], verifiedThrough: 0, break: brk, chains: [], input }
  }
  const worst = SEVERITY.find(v => list.some(c => c.verdict === v))!
  const focus = list.find(c => c.verdict === worst)!
  const damaged = stats.damaged[0]
  // A line that looks like a record but is no longer JSON was edited or corrupted: that, not the gap it leaves, is the finding.
  const brk: Break | undefined = damaged !== undefined
    ? { kind: 'not-json', seq: null, file: damaged.file, line: damaged.lineNo, message: `${damaged.file}:${damaged.lineNo} is a decision-log line that is not valid JSON: it was edited or corrupted${stats.damaged.length > 1 ? ` (${stats.damaged.length} such lines)` : ''}` }
    : focus.break
  const verdict = damaged !== undefined ? 'TAMPERED' : worst
  return {
    ok: verdict === 'VERIFIED',
    verdict,
    exitCode: VERDICT_EXIT[verdict],
    lines: focus.lines,
    writer: focus.writer,
    checkpoints: focus.checkpoints,
    signers: focus.signers,
    verifiedThrough: focus.verifiedThrough,
    ...(brk === undefined ? {} : { break: brk }),
    ...(focus.unverifiedTail === undefined ? {} : { unverifiedTail: focus.unverifiedTail }),
    chains: list,
    input,
    ...(header === undefined ? {} : { export: { createdAt: String(header.createdAt), query: header.query, sources: header.sources, matches: list.reduce((n, c) => n + (c.exported?.matches ?? 0), 0), proven: list.reduce((n, c) => n + (c.exported?.proven ?? 0), 0) } })
  }
}

/** Ties each restarted chain to the one it follows: a cut-short end is a GAP; an unsigned tail the follower vouches for is proven. */
function link (chains: Map<string, ChainCheck>): void {
  // Newest first: a chain vouches for the one before it only once its own tail is proven (by the next).
  for (const y of [...chains.values()].reverse()) {
    const f = y.r.follows
    if (f === null || f.chain === null) continue
    const x = chains.get(f.chain)
    if (x === undefined) continue
    x.r.followedBy = y.r.chain
    if (x.r.break !== undefined) continue
    const at = { file: x.r.files.at(-1) ?? '', lineNo: 0 }
    if (x.r.lastSeq < f.seq) {
      x.fail('chain-cut', at, x.r.lastSeq + 1, `chain ${x.r.chain} ends at seq ${x.r.lastSeq}, but chain ${y.r.chain}, started after it, says it ended at seq ${f.seq}: seq ${x.r.lastSeq + 1}..${f.seq} were removed from its end`)
    } else if (x.r.lastSeq > f.seq) {
      x.fail('inserted-or-reordered', at, f.seq + 1, `chain ${x.r.chain} goes on to seq ${x.r.lastSeq} after seq ${f.seq}, where chain ${y.r.chain} says it ended: lines were added after the sidecar restarted`)
    } else if (x.lastHash() !== f.hash) {
      x.fail('edited', at, f.seq, `seq ${f.seq} of chain ${x.r.chain} is not the line chain ${y.r.chain} says it ended with: it was edited`)
    } else if (x.r.unverifiedTail !== undefined && y.r.verdict === 'VERIFIED' && y.r.writer === x.r.writer) {
      // The follower's genesis holds the hash of x's last line, and the follower's checkpoints sign its genesis.
      x.r.tailVouchedBy = y.r.chain
      x.r.verifiedThrough = x.r.lastSeq
      delete x.r.unverifiedTail
    }
    x.settle()
  }
}
