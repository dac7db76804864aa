import { compactVerify, decodeProtectedHeader, importX509 } from 'jose'
import { sign, type KeyObject } from 'node:crypto'
import { derToPem, parseCertificate } from '../x509/certificate.ts'
import { verifyX509Svid } from '../spiffe/svid.ts'
import type { TrustBundle } from '../spiffe/bundle.ts'
import { SvidInvalidError } from '../errors.ts'

// A checkpoint is a JWS (jose) by the sidecar's current SVID key over the (seq, hash) of one
// decision-log line, carrying the SVID chain in x5c. Anyone holding the trust bundle can check that
// the line, and through the hash chain every line before it, is what that workload wrote.

export interface CheckpointPayload {
  /** SPIFFE ID of the writer (the genesis line names the same one). */
  iss: string
  /** The line this checkpoint covers, and the SHA-256 of that line as written. */
  seq: number
  hash: string
  iat: number
}

export interface Signer { spiffeId: string, chainDers: Buffer[], privateKey: KeyObject }

const algFor = (key: KeyObject): string => key.asymmetricKeyType === 'rsa' ? 'RS256' : key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'ES384' : 'ES256'

/**
 * Signs synchronously (node:crypto; a standard compact JWS that jose verifies): an async signature
 * lands lines later under load, and the line must follow the line it covers to prove itself.
 */
export function signCheckpoint (signer: Signer, payload: CheckpointPayload): string {
  const alg = algFor(signer.privateKey)
  const header = { alg, typ: 'gatehouse-checkpoint+jwt', x5c: signer.chainDers.map(d => d.toString('base64')) }
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`
  const digest = alg.endsWith('384') ? 'sha384' : 'sha256'
  // JWS ECDSA signatures are r||s (IEEE P1363), not DER.
  const signature = sign(digest, Buffer.from(input), alg.startsWith('ES') ? { key: signer.privateKey, dsaEncoding: 'ieee-p1363' } : signer.privateKey)
  return `${input}.${signature.toString('base64url')}`
}

export type CheckedCheckpoint =
  | { ok: true, payload: CheckpointPayload, signer: string, serial: string }
  | { ok: false, kind: 'forged' | 'untrusted', message: string }

/**
 * Verifies the signature with the key of the certificate it carries, then that certificate's chain
 * against the bundle (as of the checkpoint's own time), then that `iss` names the certificate's
 * SPIFFE ID. A valid signature by a certificate the bundle does not vouch for is `untrusted` (a wrong
 * or missing trust bundle, or a key from outside the trust domain), not `forged`: an auditor given
 * the wrong bundle must not be told the log was tampered with.
 */
export async function verifyCheckpoint (jws: string, bundle: TrustBundle): Promise<CheckedCheckpoint> {
  let p: CheckpointPayload
  let ders: Buffer[]
  try {
    const header = decodeProtectedHeader(jws)
    const x5c = header.x5c
    if (!Array.isArray(x5c) || x5c.length === 0) return { ok: false, kind: 'forged', message: 'checkpoint carries no x5c certificate chain' }
    ders = x5c.map(c => Buffer.from(c, 'base64'))
    const key = await importX509(derToPem(ders[0]!), String(header.alg))
    const { payload } = await compactVerify(jws, key)
    p = JSON.parse(new TextDecoder().decode(payload)) as CheckpointPayload
  } catch (err) {
    return { ok: false, kind: 'forged', message: `signature does not verify: ${(err as Error).message}` }
  }
  let id: string
  try {
    // The SVID was valid when the checkpoint was written; it may well have expired since.
    id = verifyX509Svid(ders, bundle, new Date(p.iat * 1000)).id.toString()
  } catch (err) {
    const reason = err instanceof SvidInvalidError ? err.reason : 'not-svid'
    const untrusted = reason === 'unknown-ca' || reason === 'foreign-trust-domain'
    return { ok: false, kind: untrusted ? 'untrusted' : 'forged', message: untrusted ? `signed by a certificate the trust bundle does not vouch for (${(err as Error).message}): a wrong or missing --trust-bundle, or a key from outside the trust domain` : `the signing certificate is not a valid SVID at the checkpoint's time: ${(err as Error).message}` }
  }
  if (p.iss !== id) return { ok: false, kind: 'forged', message: `checkpoint names ${p.iss} but is signed by ${id}` }
  return { ok: true, payload: p, signer: id, serial: parseCertificate(ders[0]!).serialHex }
}
