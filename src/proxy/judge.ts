import type { Logger } from '../log.ts'
import type { PeerIdentity } from '../spiffe/peer.ts'
import type { PolicyStore } from '../policy/policy-store.ts'
import type { DecisionLog, DecisionFields } from '../audit/record.ts'
import type { Credentials } from '../identity/credentials.ts'
import type { ProxyMetrics } from './proxy-metrics.ts'
import { authorize, authorizeConnection, deniedFields, type RequestFacts, type ConnectionFacts, type Verdict, type AuthorizeEnv } from './authorize.ts'
import type { ForwardOutcome } from './exchange.ts'
import { DecisionLogUnavailableError, InternalError } from '../errors.ts'
import { refusal } from '../error-body.ts'
import type { QuarantineSource } from '../quarantine/source.ts'

// Between the protocol stages (inbound-h1.ts, inbound-h2.ts) and the pure authorize(): the current
// policy and identity, the metrics, and the decision log, with one rule: every request gets exactly
// one decision line, whichever path ends it.

export interface Judge {
  /** authorize() with the live policy and identity, counted; an unexpected error denies with 500, never throws. */
  verdict: (peer: PeerIdentity | undefined, facts: RequestFacts) => Verdict
  /** The same for an opaque TCP connection (inbound-tcp.ts): rules with `ports` only. */
  connection: (peer: PeerIdentity | undefined, facts: ConnectionFacts) => Verdict
  /** Would the live policy still allow this connection? (no line, no metric: for re-judging live connections) */
  recheck: (peer: PeerIdentity, facts: ConnectionFacts) => { allowed: boolean, rule: string | null }
  /** Fields for a request refused before authorize() could see it (CONNECT, a parse error). */
  denied: (peer: PeerIdentity | undefined, method: string, rawPath: string, reason: string) => DecisionFields
  /** Writes the request's decision line, once: a second call for the same fields is ignored. */
  record: (fields: DecisionFields, status: number, start: number, error?: string) => void
  recorded: (fields: DecisionFields) => boolean
  /** The decision line's `error` for a forward outcome (and the upstream-failure metric and log). */
  outcomeError: (o: ForwardOutcome) => string | undefined
}

/** Reasons a policy decision gives (decide.ts): the requests counted by gatehouse_requests_total. */
const DECIDED: ReadonlySet<string> = new Set(['allow-rule', 'deny-rule', 'no-matching-rule'])

// The judge's own refusals, made once (authorize.ts says why). Why the log cannot be written
// (ENOSPC, …) is for the operator's log, not for the caller.
const LOG_DOWN = new DecisionLogUnavailableError('see the sidecar\'s log')
const INTERNAL = new InternalError()

export interface JudgeOptions {
  credentials: Credentials
  policy: PolicyStore
  quarantine: QuarantineSource
  decisions: DecisionLog
  metrics: ProxyMetrics
  logger: Logger
  /** Sees every decision line written, with its seq: the signs of a compromised caller (detector.ts). */
  onDecision?: (fields: DecisionFields, seq: number) => void
}

/** Marks fields whose line is written (a symbol: never serialized; a WeakSet entry per request cost GC time). */
const RECORDED = Symbol('gatehouse.recorded')
type Marked = DecisionFields & { [RECORDED]?: true }

export function createJudge ({ credentials, policy, quarantine, decisions, metrics, logger, onDecision }: JudgeOptions): Judge {
  const env = (peer: PeerIdentity | undefined, now: number): AuthorizeEnv =>
    ({ peer, policy: policy.current, own: credentials.current?.id.toString(), quarantine: quarantine.current, now })

  // Nothing reaches the app before its admit line is in the log: a log that cannot be written turns
  // the allow into a 503 (its decision line is attempted too, and fails the same way).
  const admitted = (v: Extract<Verdict, { ok: true }>): Verdict => {
    try {
      decisions.admit(v.fields)
      return v
    } catch (err) {
      const e = err as DecisionLogUnavailableError
      metrics.rejected.inc({ reason: 'decision-log-unavailable' })
      const fields: DecisionFields = { ...v.fields, decision: 'deny', enforced: true, reason: 'decision-log-unavailable', error: e.message }
      return { ok: false, refusal: refusal(LOG_DOWN, { requestId: fields.requestId }), fields }
    }
  }

  /** authorize()/authorizeConnection() counted, admitted if allowed; an unexpected error denies, never throws. */
  const judged = (peer: PeerIdentity | undefined, run: (env: AuthorizeEnv) => Verdict, method: string, rawPath: string): Verdict => {
    try {
      const v = run(env(peer, Date.now()))
      if (!v.ok && v.rejected !== undefined) metrics.rejected.inc({ reason: v.rejected })
      else if (peer !== undefined && DECIDED.has(v.fields.reason)) {
        metrics.countRequest(v.fields.decision, v.fields.rule ?? '', v.fields.mode, peer.id)
      }
      return v.ok ? admitted(v) : v
    } catch (err) {
      logger.error({ err }, 'authorization failed unexpectedly; denying')
      const fields = deniedFields(env(peer, Date.now()), method, rawPath, `internal: ${(err as { code?: string }).code ?? 'GH_INTERNAL'}`)
      return { ok: false, refusal: refusal(INTERNAL, { requestId: fields.requestId }), fields }
    }
  }

  return {
    verdict: (peer, facts) => judged(peer, e => authorize(facts, e), facts.method, facts.rawPath),
    connection: (peer, facts) => judged(peer, e => authorizeConnection(facts, e), 'TCP', ''),
    recheck (peer, facts) {
      try {
        const v = authorizeConnection(facts, env(peer, Date.now()))
        return { allowed: v.ok, rule: v.fields.rule }
      } catch { return { allowed: false, rule: null } } // fail closed
    },
    denied: (peer, method, rawPath, reason) => deniedFields(env(peer, Date.now()), method, rawPath, reason),
    record (fields, status, start, error) {
      const marked: Marked = fields
      if (marked[RECORDED] === true) return
      marked[RECORDED] = true
      fields.status = status
      fields.durationMs = Math.round((performance.now() - start) * 1000) / 1000
      if (error !== undefined) fields.error = error
      metrics.observeDuration(fields.decision, fields.durationMs / 1000)
      // A failed write has already failed the log (metric, operational log line, /readyz); what is left is the request id.
      let seq: number
      try { seq = decisions.write(fields) } catch {
        // A request refused because the log was down is counted in the `resumed` line; one that was forwarded is named here.
        if (fields.reason !== 'decision-log-unavailable') logger.warn({ event: 'decision_log.line_lost', requestId: fields.requestId, status }, 'decision line not written: the decision log cannot be written')
        return
      }
      onDecision?.(fields, seq)
    },
    recorded: (fields) => (fields as Marked)[RECORDED] === true,
    outcomeError (o) {
      if (o.kind === 'upstream-unavailable' || o.kind === 'upstream-timeout' || o.kind === 'upstream-reset') {
        metrics.upstreamErrors.inc({ kind: o.kind })
        logger.warn({ event: 'upstream.failed', kind: o.kind, error: o.error }, 'app did not answer')
        return `${o.kind}: ${o.error}`
      }
      return o.kind === 'client-gone' ? 'client-gone' : undefined
    }
  }
}
