import { compactVerify, decodeProtectedHeader, importX509 } from 'jose'
import { sign, type KeyObject } from 'node:crypto'
import { derToPem, parseCertificate } from '../x509/certificate.ts'
import { verifyX509Svid } from '../spiffe/svid.ts'
import type { TrustBundle } from '../spiffe/bundle.ts'

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

/** Verifies signature, chain (as of the checkpoint's own time) and signer; returns the payload. */
export async function verifyCheckpoint (jws: string, bundle: TrustBundle): Promise<{ payload: CheckpointPayload, signer: string, serial: string }> {
  const header = decodeProtectedHeader(jws)
  const x5c = header.x5c
  if (!Array.isArray(x5c) || x5c.length === 0) throw new Error('checkpoint carries no x5c certificate chain')
  const ders = x5c.map(c => Buffer.from(c, 'base64'))
  const unverified = JSON.parse(Buffer.from(jws.split('.')[1] ?? '', 'base64url').toString('utf8')) as CheckpointPayload
  // The SVID was valid when the checkpoint was written; it may well have expired since.
  const svid = verifyX509Svid(ders, bundle, new Date(unverified.iat * 1000))
  const key = await importX509(derToPem(ders[0]!), String(header.alg))
  const { payload } = await compactVerify(jws, key)
  const p = JSON.parse(new TextDecoder().decode(payload)) as CheckpointPayload
  if (p.iss !== svid.id.toString()) throw new Error(`checkpoint names ${p.iss} but is signed by ${svid.id.toString()}`)
  return { payload: p, signer: svid.id.toString(), serial: parseCertificate(ders[0]!).serialHex }
}
