import { statSync } from 'node:fs'
import type { Policy } from '../policy/load.ts'
import { compilePolicy, type CompiledRule } from '../policy/compile.ts'
import { matchSegments, type SegmentPattern } from '../policy/patterns.ts'
import { callerMatches } from '../policy/decide.ts'
import { SpiffeId } from '../spiffe/id.ts'
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

/** The filters as one predicate on a decision line (query and export read the same lines the same way). */
export function lineFilter (f: QueryFilters): (d: Record<string, any>) => boolean {
  const callerRe = f.caller === undefined ? undefined : globToRegExp(f.caller)
  const pathRe = f.path === undefined ? undefined : globToRegExp(f.path)
  return (d) => {
    if (d.msg !== 'decision') return false
    if (f.decision !== undefined && d.decision !== f.decision) return false
    if (f.rule !== undefined && d.rule !== f.rule) return false
    if (callerRe !== undefined && !callerRe.test(String(d.caller ?? ''))) return false
    if (pathRe !== undefined && !pathRe.test(String(d.path ?? d.rawPath ?? ''))) return false
    if (f.since !== undefined || f.until !== undefined) {
      const t = new Date(String(d.time))
      if (f.since !== undefined && t < f.since) return false
      if (f.until !== undefined && t > f.until) return false
    }
    return true
  }
}

export async function queryLog (files: string[], f: QueryFilters, opts: { keepLines: boolean, onLine?: (d: Record<string, any>) => void, onProgress?: (bytesDone: number, bytesTotal: number) => void }): Promise<QueryResult> {
  const matches = lineFilter(f)
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
    if (!matches(d)) continue
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

/** A rule that can never decide: an earlier deny (or the canary paths) covers every request it matches ("shadowed"), or an earlier allow rule does ("redundant"). */
export interface ShadowedRule { rule: string, list: 'rules' | 'deny', by: string, kind: 'shadowed' | 'redundant' }

/** Every request `p` matches, `q` matches too (segments: "*" one, a final "**" any depth). */
function patternCovers (q: SegmentPattern, p: SegmentPattern): boolean {
  if (p.anyDepth && !q.anyDepth) return false
  if (q.anyDepth ? p.segments.length < q.segments.length : p.segments.length !== q.segments.length) return false
  return q.segments.every((s, i) => s === '*' || s === p.segments[i])
}

/** A static check on the compiled rules: does `d` match every request `r` matches? */
function ruleCovers (d: CompiledRule, r: CompiledRule, anyCaller = false): boolean {
  if (!anyCaller) {
    if (r.callersExact.size + r.callerPatterns.length === 0) return false
    for (const id of r.callersExact) {
      const sid = SpiffeId.tryParse(id)
      if (sid === undefined || !callerMatches(d, { id, trustDomain: sid.trustDomain, segments: sid.path.split('/').slice(1) })) return false
    }
    if (!r.callerPatterns.every(p => d.callerPatterns.some(q => q.trustDomain === p.trustDomain && patternCovers(q.pattern, p.pattern)))) return false
  }
  if (d.ports !== undefined || r.ports !== undefined) return d.ports !== undefined && r.ports !== undefined && [...r.ports].every(x => d.ports!.has(x))
  if (d.methods !== undefined && (r.methods === undefined || ![...r.methods].every(m => d.methods!.has(m)))) return false
  if (d.pathsExact === undefined) return true
  if (r.pathsExact === undefined) return false
  const segs = (path: string): string[] => path.split('/').filter(s => s !== '')
  return [...r.pathsExact].every(x => d.pathsExact!.has(x) || d.pathPatterns.some(q => matchSegments(q, segs(x)))) && r.pathPatterns.every(x => d.pathPatterns.some(q => patternCovers(q, x)))
}

/** Enforced rules that can never decide a request: every one they match is decided before them. */
export function shadowedRules (policy: Policy): ShadowedRule[] {
  const c = compilePolicy(policy)
  const out: ShadowedRule[] = []
  for (const [i, r] of c.deny.entries()) {
    const by = c.canary !== undefined && ruleCovers(c.canary, r, true) ? 'canary' : c.deny.slice(0, i).find(d => ruleCovers(d, r))?.name
    if (by !== undefined) out.push({ rule: r.name, list: 'deny', by, kind: 'shadowed' })
  }
  for (const [i, r] of c.allow.entries()) {
    const deny = c.canary !== undefined && ruleCovers(c.canary, r, true) ? 'canary' : c.deny.find(d => ruleCovers(d, r))?.name
    if (deny !== undefined) { out.push({ rule: r.name, list: 'rules', by: deny, kind: 'shadowed' }); continue }
    const allow = c.allow.slice(0, i).find(a => ruleCovers(a, r))?.name
    if (allow !== undefined) out.push({ rule: r.name, list: 'rules', by: allow, kind: 'redundant' })
  }
  return out
}
