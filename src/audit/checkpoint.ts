import { CompactSign, compactVerify, decodeProtectedHeader, importX509 } from 'jose'
import type { KeyObject } from 'node:crypto'
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

export async function signCheckpoint (signer: Signer, payload: CheckpointPayload): Promise<string> {
  return await new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: algFor(signer.privateKey), typ: 'gatehouse-checkpoint+jwt', x5c: signer.chainDers.map(d => d.toString('base64')) })
    .sign(signer.privateKey)
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
