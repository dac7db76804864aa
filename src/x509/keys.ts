import { generateKeyPairSync, createPublicKey, createHash, type KeyObject } from 'node:crypto'
import { KeyRefusedError } from '../errors.ts'
import { fromDer, children, bytesOf } from './asn1.ts'
import { OID } from './oids.ts'

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096'
export const KEY_TYPES: readonly KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096']

export function generateKey (type: KeyType = 'ec-p256'): { privateKey: KeyObject, publicKey: KeyObject } {
  switch (type) {
    case 'ec-p256': return generateKeyPairSync('ec', { namedCurve: 'P-256' })
    case 'ec-p384': return generateKeyPairSync('ec', { namedCurve: 'P-384' })
    default: return generateKeyPairSync('rsa', { modulusLength: Number(type.slice(4)) })
  }
}

/**
 * The key policy shared by the CA (what it will certify) and the SVID verifier (what it will accept):
 * RSA of at least 2048 bits, or ECDSA on P-256/P-384. Everything else is refused by name.
 */
export function keyProblem (key: KeyObject): string | undefined {
  const d = key.asymmetricKeyDetails ?? {}
  if (key.asymmetricKeyType === 'rsa') {
    return (d.modulusLength ?? 0) >= 2048 ? undefined : `RSA key of ${d.modulusLength ?? 0} bits (at least 2048 required)`
  }
  if (key.asymmetricKeyType === 'ec') {
    return d.namedCurve === 'prime256v1' || d.namedCurve === 'secp384r1' ? undefined : `EC key on curve ${d.namedCurve ?? 'unknown'} (P-256 or P-384 required)`
  }
  return `${key.asymmetricKeyType ?? 'unknown'} keys are not accepted (RSA >= 2048 or ECDSA P-256/P-384 required)`
}

export function assertAcceptableKey (key: KeyObject): void {
  const problem = keyProblem(key)
  if (problem !== undefined) throw new KeyRefusedError(problem)
}

export function spkiDer (key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key
  return pub.export({ type: 'spki', format: 'der' })
}

/** RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING contents. */
export function keyIdentifier (key: KeyObject): Buffer {
  const bitString = children(fromDer(spkiDer(key)))[1]!
  return createHash('sha1').update(bytesOf(bitString).subarray(1)).digest()
}

/** The X.509 signature algorithm and digest for a signing key (ECDSA curve picks its hash, RFC 5480). */
export function signatureAlgorithm (signer: KeyObject): { oid: string, digest: string, rsa: boolean } {
  if (signer.asymmetricKeyType === 'rsa') return { oid: OID.sha256WithRsa, digest: 'sha256', rsa: true }
  if (signer.asymmetricKeyType === 'ec') {
    return signer.asymmetricKeyDetails?.namedCurve === 'secp384r1'
      ? { oid: OID.ecdsaWithSha384, digest: 'sha384', rsa: false }
      : { oid: OID.ecdsaWithSha256, digest: 'sha256', rsa: false }
  }
  throw new KeyRefusedError(`cannot sign with a ${signer.asymmetricKeyType ?? 'unknown'} key`)
}
