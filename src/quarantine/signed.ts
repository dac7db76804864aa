import { compactVerify, decodeProtectedHeader, importX509 } from 'jose'
import { sign, type KeyObject } from 'node:crypto'
import { derToPem, parseCertificate } from '../x509/certificate.ts'
import type { TrustBundle } from '../spiffe/bundle.ts'
import type { QuarantineEntry } from './list.ts'

// The quarantine list as the CA publishes it (GET /v1/quarantine): a compact JWS signed with the
// CA's issuer key, the issuer certificate in x5c. A sidecar accepts it only if that certificate is a
// CA certificate signed by a root of its own trust domain in its trust bundle, so every CA replica
// signs the same way and nothing but the CA's key material can quarantine (or un-quarantine) anyone.

export interface QuarantineDocument {
  trustDomain: string
  revision: string
  /** When the CA signed it (seconds): a sidecar never goes back to an older list. */
  iat: number
  entries: QuarantineEntry[]
}

const TYP = 'gatehouse-quarantine+jwt'

/** Synchronous, like the decision-log checkpoints: ES256/ES384 as r||s, or RS256. */
export function signQuarantine (doc: QuarantineDocument, key: KeyObject, issuerDer: Buffer): string {
  const alg = key.asymmetricKeyType === 'rsa' ? 'RS256' : key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'ES384' : 'ES256'
  const header = { alg, typ: TYP, x5c: [issuerDer.toString('base64')] }
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(doc)).toString('base64url')}`
  const signature = sign(alg.endsWith('384') ? 'sha384' : 'sha256', Buffer.from(input), alg.startsWith('ES') ? { key, dsaEncoding: 'ieee-p1363' } : key)
  return `${input}.${signature.toString('base64url')}`
}

/** The document, if signed by an issuer of `trustDomain` that the bundle vouches for; throws why not. */
export async function verifyQuarantine (jws: string, bundle: TrustBundle, trustDomain: string, now = new Date()): Promise<QuarantineDocument> {
  const header = decodeProtectedHeader(jws)
  if (header.typ !== TYP) throw new Error(`not a quarantine list (typ ${String(header.typ)})`)
  const x5c = header.x5c
  if (!Array.isArray(x5c) || x5c.length !== 1) throw new Error('expected the issuer certificate alone in x5c')
  const der = Buffer.from(x5c[0]!, 'base64')
  const issuer = parseCertificate(der)
  if (issuer.profile.basicConstraints?.value.ca !== true) throw new Error('signed by a certificate that is not a CA')
  if (now < issuer.notBefore || now > issuer.notAfter) throw new Error('signed by an issuer certificate outside its validity')
  const vouched = bundle.authoritiesFor(trustDomain).some(root => issuer.x509.checkIssued(root.x509) && issuer.x509.verify(root.publicKey))
  if (!vouched) throw new Error(`signed by an issuer that no root of ${trustDomain} in the trust bundle vouches for`)
  const { payload } = await compactVerify(jws, await importX509(derToPem(der), String(header.alg)))
  const doc = JSON.parse(new TextDecoder().decode(payload)) as QuarantineDocument
  if (doc.trustDomain !== trustDomain) throw new Error(`a list for ${doc.trustDomain}, not ${trustDomain}`)
  if (!Array.isArray(doc.entries) || typeof doc.iat !== 'number') throw new Error('malformed quarantine document')
  return doc
}
