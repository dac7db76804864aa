import { SpiffeId } from '../spiffe/id.ts'
import type { CompiledPolicy } from './compile.ts'
import { decide, callerOf, type RequestFacts } from './decide.ts'
import { wasServed } from './suggest.ts'

// `gatehouse policy replay`: what a policy would have done to the traffic a decision log recorded.
// Each logged decision is decided again, as it streams by, and only the differences are kept: a
// count per (direction, caller, rule then, rule now) and a few examples each, so a week of logs
// needs no more memory than its distinct flips. A request served in audit mode (denied, not
// enforced) counts as allowed: taking it away is what would break a caller.

/** The facts the policy decided a logged request on, or undefined for a line no policy decided (refused before it, quarantine, no identity). */
export function factsOf (d: Record<string, unknown>): RequestFacts | undefined {
  if (d.msg !== 'decision' || typeof d.caller !== 'string') return undefined
  if (d.rule === 'quarantine' || !['allow-rule', 'deny-rule', 'no-matching-rule'].includes(String(d.reason))) return undefined
  const id = SpiffeId.tryParse(d.caller)
  if (id === undefined) return undefined
  const caller = callerOf(id)
  if (d.kind === 'tcp' || d.method === 'TCP') return typeof d.port === 'number' ? { caller, method: 'TCP', path: '', segments: [], port: d.port } : undefined
  if (typeof d.path !== 'string' || typeof d.method !== 'string') return undefined
  return { caller, method: d.method, path: d.path, segments: d.path.split('/').filter(s => s !== '') }
}

export type Direction = 'allow→deny' | 'deny→allow'

export interface Example { time: string, callee: string | null, request: string }

export interface FlipGroup {
  direction: Direction
  caller: string
  /** The rule that decided then (as logged, or by the old policy) and now. */
  was: { decision: 'allow' | 'deny', rule: string | null }
  now: { decision: 'allow' | 'deny', rule: string | null }
  count: number
  examples: Example[]
}

export interface ReplayReport {
  decisions: number
  /** Lines no policy decided (refused before it, quarantined): left out. */
  skipped: number
  unchanged: number
  allowToDeny: number
  denyToAllow: number
  flips: FlipGroup[]
}

const EXAMPLES = 3

/** The request of a decision line, for people: "GET /v1/charges/12" or "TCP port 5432". */
export const requestText = (d: Record<string, unknown>): string => d.kind === 'tcp' || d.method === 'TCP' ? `TCP port ${String(d.port)}` : `${String(d.method)} ${String(d.path)}`

/**
 * Counts flips between a baseline (what the log says happened, or what an old policy would have
 * done) and the new policy. Feed it lines with add(); report() when done.
 */
export class Replayer {
  private readonly policy: CompiledPolicy
  private readonly baseline: ((d: Record<string, unknown>, facts: RequestFacts) => { decision: 'allow' | 'deny', rule: string | null }) | undefined
  private readonly groups = new Map<string, FlipGroup>()
  private readonly r: ReplayReport = { decisions: 0, skipped: 0, unchanged: 0, allowToDeny: 0, denyToAllow: 0, flips: [] }
  /** Rules of the new policy that decided at least one request (enforced and shadow). */
  readonly rulesHit = new Set<string>()

  /** Without `baseline`, the logged outcome (served or not) is the baseline. */
  constructor (policy: CompiledPolicy, baseline?: (d: Record<string, unknown>, facts: RequestFacts) => { decision: 'allow' | 'deny', rule: string | null }) {
    this.policy = policy
    this.baseline = baseline
  }

  add (d: Record<string, unknown>): void {
    if (d.msg !== 'decision') return
    const facts = factsOf(d)
    if (facts === undefined) { this.r.skipped++; return }
    this.r.decisions++
    const was = this.baseline?.(d, facts) ?? { decision: wasServed(d) ? 'allow' : 'deny', rule: typeof d.rule === 'string' ? d.rule : null }
    const n = decide(this.policy, facts)
    if (n.rule !== null) this.rulesHit.add(n.rule)
    if (n.shadowRule != null) this.rulesHit.add(n.shadowRule)
    if (n.decision === was.decision) { this.r.unchanged++; return }
    const direction: Direction = was.decision === 'allow' ? 'allow→deny' : 'deny→allow'
    if (direction === 'allow→deny') this.r.allowToDeny++
    else this.r.denyToAllow++
    const key = `${direction}\t${facts.caller.id}\t${String(was.rule)}\t${String(n.rule)}`
    let g = this.groups.get(key)
    if (g === undefined) this.groups.set(key, g = { direction, caller: facts.caller.id, was, now: { decision: n.decision, rule: n.rule }, count: 0, examples: [] })
    g.count++
    if (g.examples.length < EXAMPLES) g.examples.push({ time: String(d.time ?? ''), callee: typeof d.callee === 'string' ? d.callee : null, request: requestText(d) })
  }

  report (): ReplayReport {
    return { ...this.r, flips: [...this.groups.values()].sort((a, b) => a.direction === b.direction ? b.count - a.count : a.direction === 'allow→deny' ? -1 : 1) }
  }
}

/** The report for people. */
export function replayText (r: ReplayReport, what: string): string {
  const lines = [`${what}: ${r.decisions} decision(s) replayed, ${r.allowToDeny} allow→deny, ${r.denyToAllow} deny→allow, ${r.unchanged} unchanged${r.skipped > 0 ? `; ${r.skipped} not decided by a policy (skipped)` : ''}`]
  for (const g of r.flips) {
    lines.push(`  ${g.direction} ${g.count}x ${g.caller}: was ${g.was.decision}${g.was.rule === null ? '' : ` (rule ${g.was.rule})`}, now ${g.now.decision}${g.now.rule === null ? ' (no matching rule)' : ` (rule ${g.now.rule})`}`)
    for (const e of g.examples) lines.push(`      ${e.time} ${e.request}${e.callee === null ? '' : ` to ${e.callee}`}`)
  }
  return `${lines.join('\n')}\n`
}
