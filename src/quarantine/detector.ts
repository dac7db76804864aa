import type { DecisionFields } from '../audit/record.ts'
import { matchSegments, exactPathKey, splitPattern, type SegmentPattern } from '../policy/patterns.ts'

// Each sidecar watches its own decisions for the signs of a compromised caller (docs/quarantine.md):
//   scan    a burst of denials over many distinct paths from one caller (default 20 denials over
//           10 distinct paths within 10 s): probing for what it may reach;
//   canary  any request to a path under the policy's `canary` list: a trap no honest caller uses;
//   quarantined-peer  a quarantined identity still connecting (its stolen key is still in use).
// A tripped detector yields one Suspicion per caller and detector per cooldown, with the decision
// lines (request ids and seq numbers) as evidence. What happens next is the CA's decision.

export interface DetectorSettings {
  scanDenials: number
  scanDistinctPaths: number
  scanWindowMs: number
  /** One suspicion per (caller, detector) per this long. */
  cooldownMs: number
}

export const DEFAULT_DETECTOR: DetectorSettings = { scanDenials: 20, scanDistinctPaths: 10, scanWindowMs: 10_000, cooldownMs: 60_000 }

export interface Evidence { requestId: string, seq: number, chain: string, path: string | null, decision: string, rule: string | null }

export interface Suspicion {
  subject: string
  detector: 'scan' | 'canary' | 'quarantined-peer'
  detail: string
  evidence: Evidence[]
}

const MAX_EVIDENCE = 25
/** Callers tracked at once: a flood of identities cannot grow memory without bound. */
const MAX_CALLERS = 10_000

export class Detector {
  private readonly s: DetectorSettings
  private readonly denials = new Map<string, Array<{ at: number, path: string, evidence: Evidence }>>()
  private readonly reported = new Map<string, number>()
  private canaries: Array<{ exact: string } | { pattern: SegmentPattern }> = []

  constructor (settings: Partial<DetectorSettings> = {}) {
    this.s = { ...DEFAULT_DETECTOR, ...settings }
  }

  /** The policy's `canary` paths (patterns as in `paths`), replaced at each policy load. */
  setCanaries (paths: readonly string[]): void {
    this.canaries = paths.map(p => p.includes('*') ? { pattern: splitPattern(p) } : { exact: exactPathKey(p) })
  }

  private isCanary (path: string): boolean {
    const segments = path.split('/').slice(1)
    return this.canaries.some(c => 'exact' in c ? c.exact === exactPathKey(path) : matchSegments(c.pattern, segments))
  }

  private once (subject: string, detector: Suspicion['detector'], now: number): boolean {
    const key = `${detector} ${subject}`
    const last = this.reported.get(key)
    if (last !== undefined && now - last < this.s.cooldownMs) return false
    this.reported.set(key, now)
    if (this.reported.size > MAX_CALLERS) this.reported.delete(this.reported.keys().next().value!)
    return true
  }

  /** One decision line, after it was written at `seq` of `chain`; returns what it tripped, if anything. */
  observe (fields: DecisionFields, seq: number, chain: string, now = Date.now()): Suspicion | undefined {
    if (fields.kind === 'tcp' || fields.path === null || fields.caller === null) return undefined
    const caller = { id: fields.caller }
    const canary = this.canaries.length > 0 && this.isCanary(fields.path)
    // Most lines are allowed requests to ordinary paths: nothing is allocated for them.
    if (!canary && (fields.decision !== 'deny' || fields.rule === 'quarantine')) return undefined
    const evidence: Evidence = { requestId: fields.requestId, seq, chain, path: fields.path, decision: fields.decision, rule: fields.rule }
    if (canary && this.once(caller.id, 'canary', now)) {
      return { subject: caller.id, detector: 'canary', detail: `requested canary path ${fields.path}`, evidence: [evidence] }
    }
    if (fields.decision !== 'deny' || fields.rule === 'quarantine') return undefined
    let list = this.denials.get(caller.id)
    if (list === undefined) {
      if (this.denials.size >= MAX_CALLERS) this.denials.delete(this.denials.keys().next().value!)
      list = []
      this.denials.set(caller.id, list)
    }
    list.push({ at: now, path: fields.path, evidence })
    while (list.length > 0 && now - list[0]!.at > this.s.scanWindowMs) list.shift()
    if (list.length > this.s.scanDenials * 4) list.splice(0, list.length - this.s.scanDenials * 4)
    const paths = new Set(list.map(d => d.path))
    if (list.length >= this.s.scanDenials && paths.size >= this.s.scanDistinctPaths && this.once(caller.id, 'scan', now)) {
      const found = { subject: caller.id, detector: 'scan' as const, detail: `${list.length} denials over ${paths.size} distinct paths within ${Math.round(this.s.scanWindowMs / 1000)} s`, evidence: list.slice(-MAX_EVIDENCE).map(d => d.evidence) }
      this.denials.delete(caller.id)
      return found
    }
    return undefined
  }

  /** A connection from an identity that is already quarantined: its key is still in use somewhere. */
  quarantinedPeer (callerId: string, now = Date.now()): Suspicion | undefined {
    if (!this.once(callerId, 'quarantined-peer', now)) return undefined
    return { subject: callerId, detector: 'quarantined-peer', detail: 'a quarantined identity is still connecting', evidence: [] }
  }
}
