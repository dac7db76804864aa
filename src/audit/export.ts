import { createWriteStream, openSync } from 'node:fs'
import { once } from 'node:events'
import { GENESIS_PREV } from './record.ts'
import { readLogRecordBatches, type InputStats } from './log-input.ts'
import { lineFilter, type QueryFilters } from './query.ts'

// `gatehouse audit query --export FILE`: the lines a query matches, with what proves them, in one
// file an auditor can hand on. A decision line is proven by the hash chain from it to the next
// checkpoint (each line carries the hash of the one before, and the checkpoint's JWS signs the last
// hash), so the export holds, per chain, contiguous segments: from a matching line through the first
// checkpoint that covers every match in the segment. The lines between are context: they cannot be
// left out, because the hash of each is what the next one names. The file is decision-log lines as
// written (any tool that reads a log reads it), after one header line stating the query; that header
// is not signed (nothing in it is evidence), every other line is, and `audit verify` checks an
// export segment by segment, re-applying the header's query to say which lines it proves.

/** The header's `msg`, its format, and the record kind log-input.ts accepts for it. */
export const EXPORT_MSG = 'export'
export const EXPORT_FORMAT = 'gatehouse-audit-export/1'

export interface ExportHeader {
  format: typeof EXPORT_FORMAT
  createdAt: string
  /** The query's filters (times as ISO strings): which of the lines are the matches. */
  query: Record<string, string>
  sources: string[]
}

export interface ExportSummary {
  /** Matching decision lines exported, and how many of them a checkpoint in the export covers. */
  matched: number
  proven: number
  /** All lines written (matches and the context that chains them to a checkpoint). */
  lines: number
  segments: number
  chains: number
  /** Matching lines of format-1 logs (no chain id): not exported; verify such logs whole. */
  formatOne: number
}

export function filtersToHeader (f: QueryFilters): Record<string, string> {
  const q: Record<string, string> = {}
  for (const [k, v] of Object.entries(f)) if (v !== undefined) q[k] = v instanceof Date ? v.toISOString() : String(v)
  return q
}

export function filtersFromHeader (q: Record<string, unknown>): QueryFilters {
  const f: QueryFilters = {}
  if (typeof q.caller === 'string') f.caller = q.caller
  if (q.decision === 'allow' || q.decision === 'deny') f.decision = q.decision
  if (typeof q.path === 'string') f.path = q.path
  if (typeof q.rule === 'string') f.rule = q.rule
  if (typeof q.since === 'string') f.since = new Date(q.since)
  if (typeof q.until === 'string') f.until = new Date(q.until)
  return f
}

/** One chain's lines since its first match not yet covered by a checkpoint. */
interface Pending { lines: string[], openMatches: number[], lastSeq: number }

export async function exportEvidence (files: string[], f: QueryFilters, out: string): Promise<ExportSummary> {
  const matches = lineFilter(f)
  // Never over an existing file (evidence is not overwritten): opened here so the error is this call's.
  const sink = createWriteStream('', { fd: openSync(out, 'wx', 0o640) })
  let failed: Error | undefined
  sink.on('error', (err) => { failed = err })
  const write = async (text: string): Promise<void> => {
    if (failed !== undefined) throw failed
    if (!sink.write(text)) await Promise.race([once(sink, 'drain'), once(sink, 'error')])
  }
  const header: ExportHeader = { format: EXPORT_FORMAT, createdAt: new Date().toISOString(), query: filtersToHeader(f), sources: files }
  await write(`${JSON.stringify({ msg: EXPORT_MSG, seq: 0, prev: GENESIS_PREV, export: header })}\n`)
  const s: ExportSummary = { matched: 0, proven: 0, lines: 0, segments: 0, chains: 0, formatOne: 0 }
  const chains = new Map<string, Pending>()
  const flush = async (p: Pending): Promise<void> => {
    if (p.lines.length === 0) return
    s.lines += p.lines.length
    const text = `${p.lines.join('\n')}\n`
    p.lines = []
    await write(text)
  }
  const stats: InputStats = { skipped: 0, damaged: [] }
  for await (const batch of readLogRecordBatches(files, stats)) {
    for (const lr of batch) {
      const rec = lr.rec
      const match = matches(rec)
      if (typeof rec.chain !== 'string') { if (match) s.formatOne++; continue }
      let p = chains.get(rec.chain)
      const seq = rec.seq as number
      if (p === undefined) {
        if (!match) continue
        chains.set(rec.chain, p = { lines: [], openMatches: [], lastSeq: -1 })
        s.chains++
      }
      if (p.openMatches.length === 0 && !match) continue
      // A new segment starts wherever the last one did not end on the line just before.
      if (p.lines.length === 0 && seq !== p.lastSeq + 1) s.segments++
      p.lines.push(lr.text)
      p.lastSeq = seq
      if (match) { p.openMatches.push(seq); s.matched++ }
      if (rec.msg === 'checkpoint' && typeof rec.covers === 'number') {
        // Matches written while the checkpoint was being signed (after the line it covers) stay
        // open: the segment goes on to the next checkpoint, so the chain of hashes stays whole.
        const covers = rec.covers
        const covered = p.openMatches.filter(m => m <= covers).length
        s.proven += covered
        p.openMatches = p.openMatches.slice(covered)
        await flush(p)
      }
    }
  }
  // Matches no checkpoint covers yet (the log's unsigned tail) go out too, and verify says so.
  for (const p of chains.values()) await flush(p)
  if (failed !== undefined) throw failed
  await new Promise<void>((resolve, reject) => { sink.once('error', reject); sink.end(resolve) })
  return s
}
