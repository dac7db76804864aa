import { RenewalChainExpiredError, RenewalTokenRequiredError } from '../errors.ts'
import type { RenewalOrigin } from '../x509/origin.ts'
import type { Attestation } from './attest.ts'

// Renewal is bound to the original attestation, statelessly: each leaf records how its identity was
// first proven and when (the renewal-origin extension), and a renewal by SVID inherits that record
// unchanged, so no renewal can reset it. Whoever steals an SVID therefore gets at most what the
// original attestation allows:
//   k8s-sa-token  never renewed by the SVID alone: the sidecar sends a fresh projected token, checked
//                 exactly as at first issuance, so a deleted service account or pod stops renewals.
//   join-token    renewed by the SVID alone until maxChainAgeMs after the join token was spent; then
//                 a new join token is needed.
// A leaf with no origin (`ca issue`, or a CA from before this check) cannot renew by itself.

export const DEFAULT_MAX_RENEWAL_CHAIN_AGE_MS = 24 * 3_600_000

export type OriginMethod = 'join-token' | 'k8s-sa-token'

/** The origin the new leaf records, or the refusal when the attestation cannot renew this identity. */
export function originFor (a: Attestation, now: Date, maxChainAgeMs: number): RenewalOrigin & { method: OriginMethod } {
  if (a.method !== 'svid') return { method: a.method, startedAt: now }
  const id = a.id.toString()
  const origin = a.origin
  if (origin?.method === 'join-token') {
    if (now.getTime() - origin.startedAt.getTime() > maxChainAgeMs) throw new RenewalChainExpiredError(id, origin.startedAt, formatDuration(maxChainAgeMs))
    return { method: 'join-token', startedAt: origin.startedAt }
  }
  if (origin?.method === 'k8s-sa-token') {
    throw new RenewalTokenRequiredError(`${id} was attested by a Kubernetes service-account token; it renews only with a fresh projected service-account token (Authorization: Bearer), not with the SVID alone`)
  }
  throw new RenewalTokenRequiredError(`the presented SVID for ${id} records no attestation origin (issued by 'gatehouse ca issue' or by an older CA), so it cannot renew by itself; obtain a new one with a join token or a service-account token`)
}

/** 86400000 -> "24h": as the flag is usually written (hours, not days), for the refusal message. */
export function formatDuration (ms: number): string {
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}
