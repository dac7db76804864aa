import { randomUUID } from 'node:crypto'
import type { PeerIdentity } from '../spiffe/peer.ts'
import { normalizeTarget, isValidMethod } from '../policy/normalize.ts'
import { decide, type Decision } from '../policy/decide.ts'
import type { ActivePolicy } from '../policy/policy-store.ts'
import type { DecisionFields } from '../audit/record.ts'
import { refusal, type Refusal } from '../error-body.ts'
import { BadRequestError, ForbiddenError, NotReadyError, PeerCertExpiredError, type GatehouseError } from '../errors.ts'
import type { QuarantineList } from '../quarantine/list.ts'

// The authorization stage, the same for every protocol: the facts of one request (as HTTP/1.1 or
// HTTP/2 carried them) and the verified peer in, a Verdict out. Pure apart from the request id it
// makes up when the caller sent none: no socket, no clock but `now`, no side effects, so every case
// is a unit test. The Verdict carries the decision line's fields; the caller writes the line.

export interface RequestFacts {
  method: string
  /** The request target as received (origin-form for HTTP/1.1, :path for HTTP/2). */
  rawPath: string
  /** The caller's x-request-id header, kept when it is a sane token. */
  requestIdHeader: string | string[] | undefined
  /** A protocol-level fault found before authorization (bad HTTP version, a forbidden HTTP/2 header). */
  protocolProblem?: string
}

export interface AuthorizeEnv {
  /** undefined: the connection has no verified SVID (cannot happen past the TLS stage, but fails closed). */
  peer: PeerIdentity | undefined
  policy: ActivePolicy | undefined
  /** Our own SPIFFE ID (the callee), undefined before an identity is loaded. */
  own: string | undefined
  now: number
  /** Identities denied before the policy, whatever it allows (docs/quarantine.md). */
  quarantine?: QuarantineList
}

export type Verdict =
  | { ok: false, refusal: Refusal, fields: DecisionFields, /** the rejected-request metric's reason */ rejected?: string, /** end the connection after answering */ close?: boolean }
  | { ok: true, target: string, fields: DecisionFields, /** x-forwarded-client-cert for the app */ xfcc: string }

const REQUEST_ID = /^[\w.:=+/-]{1,128}$/

// The refusals, made once: a denied request is answered with a value built from one of these (its
// code, status and message), so a flood of denied requests constructs no Error.
const DENIED = new ForbiddenError()
const NO_PEER = new ForbiddenError('no verified peer certificate')
const QUARANTINED = new ForbiddenError('the caller is quarantined')
const PEER_EXPIRED = new PeerCertExpiredError()
const NOT_READY = new NotReadyError()
const BAD_REQUEST = new BadRequestError('bad request')

/** A decision line's fields for a request denied before (or without) a policy decision. */
export function deniedFields (env: Omit<AuthorizeEnv, 'now'>, method: string, rawPath: string, reason: string, requestId: string = randomUUID()): DecisionFields {
  return {
    requestId,
    decision: 'deny',
    mode: env.policy?.compiled.mode ?? 'enforce',
    enforced: true,
    rule: null,
    reason,
    caller: env.peer?.id ?? null,
    callee: env.own ?? null,
    method,
    path: null,
    rawPath,
    status: 0,
    durationMs: 0,
    policyRevision: env.policy?.revision ?? null,
    peerCertSerial: env.peer?.serial ?? null
  }
}

/** A quarantined caller is denied by rule `quarantine` before the policy is asked; the line says why. */
function quarantined (fields: DecisionFields, env: AuthorizeEnv): boolean {
  const entry = env.peer === undefined ? undefined : env.quarantine?.holds(env.peer, env.now)
  if (entry === undefined) return false
  fields.rule = 'quarantine'
  fields.reason = 'quarantined'
  fields.quarantineReason = entry.reason
  return true
}

/** The policy's answer into the decision line's fields. */
function recordDecision (fields: DecisionFields, d: Decision): void {
  fields.decision = d.decision
  fields.mode = d.mode
  fields.rule = d.rule
  fields.reason = d.reason
  fields.enforced = !d.allowed || d.decision === 'allow'
  if (d.shadowDecision !== undefined) { fields.shadowDecision = d.shadowDecision; fields.shadowRule = d.shadowRule ?? null }
}

/** The facts of one opaque TCP connection: the app port the caller's sidecar asked for. */
export interface ConnectionFacts { port: number }

/** The TCP counterpart of authorize(): the same peer checks and policy, rules with `ports` only. */
export function authorizeConnection (facts: ConnectionFacts, env: AuthorizeEnv): Verdict {
  const { peer, policy, own } = env
  const fields = deniedFields(env, 'TCP', '', '')
  fields.path = null
  fields.kind = 'tcp'
  fields.port = facts.port
  const refuse = (err: GatehouseError, reason: string): Verdict => {
    fields.reason = reason
    return { ok: false, refusal: refusal(err, { requestId: fields.requestId }), fields, close: true }
  }
  if (peer === undefined) return refuse(NO_PEER, 'no-verified-peer')
  if (env.now > peer.notAfter.getTime()) return refuse(PEER_EXPIRED, 'peer-certificate-expired')
  if (quarantined(fields, env)) return { ok: false, refusal: refusal(QUARANTINED, { reason: 'quarantined', requestId: fields.requestId }), fields, rejected: 'quarantined', close: true }
  if (policy === undefined || own === undefined) return refuse(NOT_READY, 'not-ready: no policy or identity loaded')
  const d = decide(policy.compiled, { caller: peer, method: 'TCP', path: '', segments: [], port: facts.port })
  recordDecision(fields, d)
  if (!d.allowed) return refuse(DENIED, d.reason)
  return { ok: true, target: `:${facts.port}`, fields, xfcc: '' }
}

interface RefuseExtra { rejected?: string, close?: boolean, message?: string, bodyReason?: string }

/** A refused request's Verdict (a function of its own, not a closure made per request). */
function refused (fields: DecisionFields, err: GatehouseError, reason: string, extra: RefuseExtra = {}): Verdict {
  fields.reason = reason
  if (err.status === 400) fields.error = reason
  return { ok: false, refusal: refusal(err, { requestId: fields.requestId, message: extra.message, reason: extra.bodyReason }), fields, ...(extra.rejected === undefined ? {} : { rejected: extra.rejected }), ...(extra.close === true ? { close: true } : {}) }
}

// The body's reason is the rejected-request metric's (protocol, method, target); its message says what was wrong.
const badRequest = (fields: DecisionFields, rejected: string, why: string): Verdict => refused(fields, BAD_REQUEST, `bad-request: ${why}`, { rejected, message: why, bodyReason: rejected, close: true })

export function authorize (facts: RequestFacts, env: AuthorizeEnv): Verdict {
  const { peer, policy, own } = env
  const requestId = typeof facts.requestIdHeader === 'string' && REQUEST_ID.test(facts.requestIdHeader) ? facts.requestIdHeader : randomUUID()
  const fields = deniedFields(env, facts.method, facts.rawPath, '', requestId)

  if (peer === undefined) return refused(fields, NO_PEER, 'no-verified-peer')
  // Continuous verification: a connection does not outlive its peer's certificate.
  if (env.now > peer.notAfter.getTime()) return refused(fields, PEER_EXPIRED, 'peer-certificate-expired', { close: true })
  if (facts.protocolProblem !== undefined) return badRequest(fields, 'protocol', facts.protocolProblem)
  if (!isValidMethod(facts.method)) return badRequest(fields, 'method', 'method is not an upper-case token')
  const n = normalizeTarget(facts.rawPath)
  if (!n.ok) return badRequest(fields, 'target', n.reason)
  fields.path = n.path
  // The connection is closed after the answer: a quarantined caller keeps nothing open.
  if (quarantined(fields, env)) return { ok: false, refusal: refusal(QUARANTINED, { reason: 'quarantined', requestId }), fields, rejected: 'quarantined', close: true }
  if (policy === undefined || own === undefined) return refused(fields, NOT_READY, 'not-ready: no policy or identity loaded')
  const d = decide(policy.compiled, { caller: peer, method: facts.method, path: n.path, segments: n.segments })
  recordDecision(fields, d)
  if (!d.allowed) return refused(fields, DENIED, d.reason)
  return { ok: true, target: n.target, fields, xfcc: `By=${own};Hash=${peer.certHash};URI=${peer.id}` }
}
