import type { Logger } from '../log.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { ReportRefusedError, RateLimitedError } from '../errors.ts'
import { compileCallers, type CallerMatcher } from '../policy/compile.ts'
import { callerMatches, callerOf } from '../policy/decide.ts'
import { RateLimiter } from './rate-limit.ts'
import { editQuarantine, type QuarantineBook } from './quarantine-book.ts'

// POST /v1/reports (docs/quarantine.md): a sidecar whose detector tripped reports the caller, with
// its decision lines as evidence, authenticated by its own SVID. The CA decides:
//   --auto-quarantine off      record the report, change nothing;
//   --auto-quarantine audit    (default) log "would quarantine ID because …", change nothing;
//   --auto-quarantine enforce  add a quarantine entry with --auto-quarantine-ttl and the evidence as reason,
// once --quorum distinct sidecars reported the same identity within 10 minutes. Refused: a report
// about the reporter itself, about an identity on --never-quarantine, malformed, or over the
// reporter's rate. Every report, accepted or refused, is one log line with its reason.

export type AutoQuarantineMode = 'off' | 'audit' | 'enforce'
export const AUTO_QUARANTINE_MODES: readonly AutoQuarantineMode[] = ['off', 'audit', 'enforce']

export interface ReportDeskOptions {
  dir: string
  trustDomain: string
  book: QuarantineBook
  logger: Logger
  mode: AutoQuarantineMode
  quorum: number
  neverQuarantine: readonly string[]
  ttlMs: number
  windowMs?: number
}

interface Report { subject: string, detector: string, detail: string, evidence: unknown[] }

const DETECTORS = new Set(['scan', 'canary', 'quarantined-peer'])

export class ReportDesk {
  private readonly o: ReportDeskOptions
  private readonly never: CallerMatcher
  private readonly limiter = new RateLimiter({ burst: 10, perMinute: 30, maxKeys: 10_000 })
  /** subject -> reporter -> when it reported. */
  private readonly seen = new Map<string, Map<string, number>>()

  constructor (o: ReportDeskOptions) {
    this.o = o
    this.never = compileCallers(o.neverQuarantine)
  }

  /** The outcome for a well-formed, acceptable report; throws ReportRefusedError (or RateLimitedError) otherwise. */
  receive (reporter: SpiffeId, body: unknown, now = Date.now()): string {
    const log = this.o.logger
    let report: Report | undefined
    try {
      report = this.parse(body)
      const subject = SpiffeId.parse(report.subject)
      if (subject.toString() === reporter.toString()) throw new ReportRefusedError('a sidecar cannot report its own identity')
      const wait = this.limiter.take(reporter.toString())
      if (wait > 0) throw new RateLimitedError(wait)
      const caller = callerOf(subject)
      if (callerMatches(this.never, caller)) throw new ReportRefusedError(`${subject.toString()} is on --never-quarantine`)
      const outcome = this.decide(subject.toString(), reporter.toString(), report, now)
      log.warn({ event: 'report.received', reporter: reporter.toString(), subject: report.subject, detector: report.detector, detail: report.detail, evidence: report.evidence.length, outcome, mode: this.o.mode }, `quarantine report: ${outcome}`)
      return outcome
    } catch (err) {
      log.warn({ event: 'report.refused', reporter: reporter.toString(), subject: report?.subject, detector: report?.detector, code: (err as ReportRefusedError).code, reason: (err as Error).message }, 'quarantine report refused')
      throw err
    }
  }

  private parse (body: unknown): Report {
    const b = body as Partial<Report> | null
    if (typeof b?.subject !== 'string' || SpiffeId.tryParse(b.subject) === undefined) throw new ReportRefusedError('subject: expected the reported SPIFFE ID')
    if (!SpiffeId.parse(b.subject).memberOf(this.o.trustDomain)) throw new ReportRefusedError(`subject: not in trust domain ${this.o.trustDomain}`)
    if (typeof b.detector !== 'string' || !DETECTORS.has(b.detector)) throw new ReportRefusedError(`detector: expected one of ${[...DETECTORS].join(', ')}`)
    if (!Array.isArray(b.evidence) || b.evidence.length > 100) throw new ReportRefusedError('evidence: expected a list of at most 100 decision lines')
    return { subject: b.subject, detector: b.detector, detail: typeof b.detail === 'string' ? b.detail.slice(0, 500) : '', evidence: b.evidence }
  }

  private decide (subject: string, reporter: string, r: Report, now: number): string {
    const window = this.o.windowMs ?? 600_000
    const id = SpiffeId.parse(subject)
    if (this.o.book.holds(id, now) !== undefined) return 'already-quarantined'
    let by = this.seen.get(subject)
    if (by === undefined) { by = new Map(); this.seen.set(subject, by) }
    by.set(reporter, now)
    for (const [who, at] of by) if (now - at > window) by.delete(who)
    if (this.seen.size > 10_000) this.seen.delete(this.seen.keys().next().value!)
    if (by.size < this.o.quorum) return `recorded (${by.size} of ${this.o.quorum} reporters)`
    const reason = `auto: ${r.detector} (${r.detail}) reported by ${[...by.keys()].join(', ')}`
    if (this.o.mode === 'off') return 'recorded'
    if (this.o.mode === 'audit') {
      this.o.logger.warn({ event: 'quarantine.would_quarantine', spiffeId: subject, reason }, `would quarantine ${subject} because ${reason} (--auto-quarantine audit)`)
      return 'would-quarantine'
    }
    const added = new Date(now)
    editQuarantine(this.o.dir, entries => [...entries.filter(e => e.id !== subject), { id: subject, reason, added: added.toISOString(), expires: new Date(now + this.o.ttlMs).toISOString(), by: 'auto' }])
    this.seen.delete(subject)
    return 'quarantined'
  }
}
