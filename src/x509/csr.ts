import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import forge from 'node-forge'
import { CsrInvalidError } from '../errors.ts'
import * as A from './asn1.ts'

import { derToPem } from './certificate.ts'
import { assertAcceptableKey, signatureAlgorithm, spkiDer } from './keys.ts'

// PKCS#10 certificate requests. The CA uses a CSR for one thing only: proof that the caller holds
// the private key of the public key it wants certified. Subject, SANs and requested extensions are
// deliberately ignored: identity comes from the authenticated token, never from the request.

const DIGEST_BY_SIG_OID: Record<string, string> = {
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512'
}

export const MAX_CSR_BYTES = 16 * 1024

function csrDer (input: string | Buffer): Buffer {
  if (Buffer.isBuffer(input)) return input
  const m = /-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----([\s\S]*?)-----END (?:NEW )?CERTIFICATE REQUEST-----/.exec(input)
  if (m === null) throw new CsrInvalidError('no PEM "CERTIFICATE REQUEST" block found')
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')
}

/** Parses a CSR, verifies its self-signature (proof of possession) and the key policy; returns the public key. */
export function verifyCsr (input: string | Buffer): KeyObject {
  const der = csrDer(input)
  if (der.length > MAX_CSR_BYTES) throw new CsrInvalidError(`CSR is larger than ${MAX_CSR_BYTES} bytes`)
  let info: A.Asn1, sigAlg: A.Asn1, sig: A.Asn1
  try {
    const parts = A.children(A.fromDer(der))
    if (parts.length !== 3) throw new Error('expected 3 elements')
    ;[info, sigAlg, sig] = parts as [A.Asn1, A.Asn1, A.Asn1]
  } catch (err) {
    throw new CsrInvalidError(`CSR is not valid DER: ${(err as Error).message}`)
  }
  const infoFields = A.children(info)
  const spki = infoFields[2]
  if (spki === undefined) throw new CsrInvalidError('CSR has no subjectPublicKeyInfo')
  let publicKey: KeyObject
  try {
    publicKey = createPublicKey({ key: A.toDer(spki), format: 'der', type: 'spki' })
  } catch {
    throw new CsrInvalidError('CSR public key cannot be read')
  }
  assertAcceptableKey(publicKey)
  const algOid = A.oidOf(A.children(sigAlg)[0] ?? sigAlg)
  const digest = DIGEST_BY_SIG_OID[algOid]
  if (digest === undefined) throw new CsrInvalidError(`CSR signature algorithm ${algOid} is not accepted`)
  const sigBytes = A.bytesOf(sig).subarray(1)
  let ok = false
  try { ok = verify(digest, A.toDer(info), publicKey, sigBytes) } catch { ok = false }
  if (!ok) throw new CsrInvalidError('CSR signature does not verify (no proof of possession of the private key)')
  return publicKey
}

/** A minimal CSR (empty subject, no attributes) proving possession of `privateKey`. */
export function createCsr (privateKey: KeyObject): string {
  const alg = signatureAlgorithm(privateKey)
  const info = A.seq(
    A.smallInt(0),
    A.seq(),
    A.fromDer(spkiDer(privateKey)),
    forge.asn1.create(A.Class.CONTEXT_SPECIFIC, 0, true, [])
  )
  const infoDer = A.toDer(info)
  const algId = alg.rsa ? A.seq(A.oid(alg.oid), A.nul()) : A.seq(A.oid(alg.oid))
  const der = A.toDer(A.seq(A.fromDer(infoDer), algId, A.bits(sign(alg.digest, infoDer, privateKey))))
  return derToPem(der, 'CERTIFICATE REQUEST')
}
