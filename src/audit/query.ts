import { statSync } from 'node:fs'
import type { Policy } from '../policy/load.ts'
import { readLogRecords, type InputStats } from './log-input.ts'

// `gatehouse audit query`: filters decision lines as it streams them (a million lines never sit in
// memory) and builds the summaries a security team asks for: who calls whom, which callers are
// denied where, and, given the policy, which rules never matched and which allowed callers were
// never seen (candidates for removal: least privilege).

export interface QueryFilters {
  caller?: string
  decision?: 'allow' | 'deny'
  since?: Date
  until?: Date
  /** Glob on the normalized path: "*" within a segment, "**" across segments. */
  path?: string
  /** The deciding rule, exactly (`quarantine` and `canary` included). */
  rule?: string
}

export interface QueryResult {
  scanned: number
  matched: number
  lines: Array<Record<string, any>>
  calls: Map<string, number>
  denials: Map<string, number>
  rulesHit: Map<string, number>
  callersSeen: Set<string>
}

export function globToRegExp (glob: string): RegExp {
  // As in policies, a final "/**" also covers the bare path ("/v1/charges/**" matches "/v1/charges").
  if (glob.endsWith('/**')) return new RegExp(`^${globToRegExp(glob.slice(0, -3)).source.slice(1, -1)}(/.*)?$`)
  let re = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!
    if (c === '*' && glob[i + 1] === '*') { re += '.*'; i++ } else if (c === '*') re += '[^/]*'
    else if (c === '?') re += '[^/]'
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&')
  }
  return new RegExp(`^${re}$`)
}

export async function queryLog (files: string[], f: QueryFilters, opts: { keepLines: boolean, onLine?: (d: Record<string, any>) => void, onProgress?: (bytesDone: number, bytesTotal: number) => void }): Promise<QueryResult> {
  const callerRe = f.caller === undefined ? undefined : globToRegExp(f.caller)
  const pathRe = f.path === undefined ? undefined : globToRegExp(f.path)
  const result: QueryResult = { scanned: 0, matched: 0, lines: [], calls: new Map(), denials: new Map(), rulesHit: new Map(), callersSeen: new Set() }
  const total = files.reduce((n, file) => n + statSync(file).size, 0)
  let done = 0
  const inc = (m: Map<string, number>, k: string): void => { m.set(k, (m.get(k) ?? 0) + 1) }
  // Any input verify reads (CRI, Docker json, gzip, mixed streams); only decision lines matter here.
  const stats: InputStats = { skipped: 0, damaged: [] }
  for await (const line of readLogRecords(files, stats)) {
    done += line.text.length + 1
    if (opts.onProgress !== undefined && result.scanned % 100_000 === 0) opts.onProgress(Math.min(done, total), total)
    if (line.rec.msg !== 'decision') continue
    result.scanned++
    const d = line.rec as Record<string, any>
    if (f.decision !== undefined && d.decision !== f.decision) continue
    if (f.rule !== undefined && d.rule !== f.rule) continue
    if (callerRe !== undefined && !callerRe.test(String(d.caller ?? ''))) continue
    if (pathRe !== undefined && !pathRe.test(String(d.path ?? d.rawPath ?? ''))) continue
    if (f.since !== undefined || f.until !== undefined) {
      const t = new Date(String(d.time))
      if (f.since !== undefined && t < f.since) continue
      if (f.until !== undefined && t > f.until) continue
    }
    result.matched++
    if (opts.keepLines) result.lines.push(d)
    opts.onLine?.(d)
    const caller = String(d.caller ?? '(no identity)')
    result.callersSeen.add(caller)
    inc(result.calls, `${caller}\t${String(d.callee ?? '?')}`)
    if (d.decision === 'deny') inc(result.denials, `${caller}\t${String(d.path ?? d.rawPath ?? '')}`)
    if (typeof d.rule === 'string') inc(result.rulesHit, d.rule)
  }
  opts.onProgress?.(total, total)
  return result
}

/** With the policy: rules that never decided a request, and exact callers an allow rule names but who never called. */
export function policyFindings (policy: Policy, r: QueryResult): { unusedRules: string[], unseenCallers: Array<{ rule: string, caller: string }> } {
  const unusedRules = [...policy.deny, ...policy.rules].map(x => x.name).filter(name => !r.rulesHit.has(name))
  const unseenCallers = policy.rules.flatMap(rule => rule.from.filter(c => !c.includes('*') && !r.callersSeen.has(c)).map(caller => ({ rule: rule.name, caller })))
  return { unusedRules, unseenCallers }
}
