import * as A from './asn1.ts'

// The renewal-origin extension (OID.renewalOrigin, non-critical) that every workload leaf from
// `ca serve` carries: how the identity was first attested and when. It lets the CA bind a renewal
// to the original attestation without keeping state; a forged one is impossible because the CA
// reads it only from leaves its own issuer signed.
//
//   RenewalOrigin ::= SEQUENCE {
//     method          UTF8String,        -- "join-token" or "k8s-sa-token"
//     chainStartedAt  GeneralizedTime }  -- when that attestation happened, to the millisecond

export interface RenewalOrigin { method: string, startedAt: Date }

const GENERALIZED_MS = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,3}))?Z$/

export function encodeRenewalOrigin (o: RenewalOrigin): A.Asn1 {
  return A.seq(A.utf8(o.method), A.generalizedTimeMs(o.startedAt))
}

/**
 * The origin, or undefined when the value is not one we wrote. Never throws: the extension is
 * non-critical, so a stranger's certificate using the same OID must still parse (it then simply
 * records no origin, and cannot renew by itself).
 */
export function decodeRenewalOrigin (value: Buffer): RenewalOrigin | undefined {
  try {
    const [method, time, ...rest] = A.children(A.fromDer(value))
    if (method?.type !== A.Type.UTF8 || time?.type !== A.Type.GENERALIZEDTIME || rest.length > 0) return undefined
    const m = GENERALIZED_MS.exec(String(time.value))
    if (m === null) return undefined
    const [, y, mo, d, h, mi, s, ms = '0'] = m
    const startedAt = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), Number(ms.padEnd(3, '0'))))
    return Number.isNaN(startedAt.getTime()) ? undefined : { method: A.bytesOf(method).toString('utf8'), startedAt }
  } catch {
    return undefined
  }
}
