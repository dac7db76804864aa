import { SvidInvalidError } from '../errors.ts'
import { parseCertificate, type Certificate } from '../x509/certificate.ts'
import { KU, OID } from '../x509/oids.ts'
import { keyProblem } from '../x509/keys.ts'
import { SpiffeId } from './id.ts'
import type { TrustBundle } from './bundle.ts'

// The X.509-SVID verifier shared by the CA (never issue a bad one) and the proxy (never accept a
// bad peer). Node's TLS verification accepts a CA certificate as a client leaf, two URI SANs, a
// keyCertSign leaf and a leaf without keyUsage, so every SVID rule is checked here explicitly, in
// the order go-spiffe's x509svid.Verify uses: identity, bundle, leaf profile, then the path.

export const MAX_CHAIN_DEPTH = 8

export interface VerifiedSvid {
  id: SpiffeId
  leaf: Certificate
  /** Leaf, intermediates, then the trust anchor that ended the path. */
  path: Certificate[]
}

const notSvid = (message: string): SvidInvalidError => new SvidInvalidError('not-svid', message)

/** The SPIFFE ID of a leaf: exactly one URI SAN, a valid SPIFFE ID with a non-root path (X509-SVID 2, 3.1, 5.2). */
export function leafSpiffeId (cert: Certificate): SpiffeId {
  const san = cert.profile.subjectAltName
  const uris = san?.value.uris ?? []
  if (uris.length === 0) throw notSvid('certificate contains no URI SAN')
  if (uris.length > 1) throw notSvid('certificate contains more than one URI SAN')
  const id = SpiffeId.tryParse(uris[0]!)
  if (id === undefined) throw notSvid(`URI SAN ${JSON.stringify(uris[0]!.slice(0, 80))} is not a valid SPIFFE ID`)
  if (id.isRoot) throw notSvid(`leaf SPIFFE ID ${id.toString()} has no path`)
  if (cert.profile.subjectEmpty && san?.critical !== true) throw notSvid('subject is empty but the SAN extension is not critical (RFC 5280 4.1.2.6)')
  return id
}

/** The leaf rules of X509-SVID 4.1-4.4 and 5.2, plus the key policy. */
export function checkLeafProfile (cert: Certificate): void {
  const p = cert.profile
  if (p.basicConstraints?.value.ca === true) throw notSvid('leaf certificate has the CA flag set')
  if (p.keyUsage === undefined) throw notSvid('leaf certificate has no key usage extension')
  if (!p.keyUsage.critical) throw notSvid('leaf key usage extension is not critical')
  if (p.keyUsage.value.has(KU.keyCertSign)) throw notSvid("leaf certificate has 'keyCertSign' key usage")
  if (p.keyUsage.value.has(KU.cRLSign)) throw notSvid("leaf certificate has 'cRLSign' key usage")
  if (!p.keyUsage.value.has(KU.digitalSignature)) throw notSvid("leaf certificate lacks 'digitalSignature' key usage")
  const eku = p.extKeyUsage?.value
  if (eku !== undefined && !(eku.includes(OID.serverAuth) && eku.includes(OID.clientAuth))) {
    throw notSvid('leaf extended key usage must include both serverAuth and clientAuth')
  }
  if (p.unknownCritical.length > 0) throw notSvid(`leaf has unknown critical extension ${p.unknownCritical[0]!}`)
  const weak = keyProblem(cert.publicKey)
  if (weak !== undefined) throw new SvidInvalidError('weak-key', weak)
}

function checkTime (cert: Certificate, now: Date, what: string): void {
  if (now < cert.notBefore) throw new SvidInvalidError('not-yet-valid', `${what} ${cert.serialHex} is not valid before ${cert.notBefore.toISOString()}`)
  if (now > cert.notAfter) throw new SvidInvalidError('expired', `${what} ${cert.serialHex} expired at ${cert.notAfter.toISOString()}`)
}

function uriHost (uri: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(uri)
  return (m?.[1] ?? '').toLowerCase()
}

/** RFC 5280 4.2.1.10 URI constraints: "host" matches exactly, ".domain" matches any subdomain. */
function uriConstraintMatches (constraint: string, host: string): boolean {
  const c = constraint.toLowerCase()
  return c.startsWith('.') ? host.endsWith(c) : host === c
}

/** A certificate above the leaf: CA, keyCertSign, path length, SPIFFE ID without path, name constraints. */
function checkSigner (cert: Certificate, casBelow: number, leafId: SpiffeId, now: Date): void {
  const p = cert.profile
  const bc = p.basicConstraints?.value
  if (bc?.ca !== true) throw new SvidInvalidError('bad-chain', `signing certificate ${cert.serialHex} does not have the CA flag set`)
  if (p.keyUsage !== undefined && !p.keyUsage.value.has(KU.keyCertSign)) {
    throw new SvidInvalidError('bad-chain', `signing certificate ${cert.serialHex} lacks 'keyCertSign' key usage`)
  }
  if (bc.pathLen !== undefined && casBelow > bc.pathLen) {
    throw new SvidInvalidError('bad-chain', `signing certificate ${cert.serialHex} allows ${bc.pathLen} CA(s) below it, the path has ${casBelow}`)
  }
  for (const uri of p.subjectAltName?.value.uris ?? []) {
    const id = SpiffeId.tryParse(uri)
    if (id !== undefined && !id.isRoot) throw new SvidInvalidError('bad-chain', `signing certificate ${cert.serialHex} has SPIFFE ID ${uri} with a path`)
  }
  const nc = p.nameConstraints?.value
  if (nc !== undefined) {
    const host = uriHost(leafId.toString())
    if (nc.excludedUris.some(c => uriConstraintMatches(c, host))) throw new SvidInvalidError('bad-chain', `${leafId.toString()} is excluded by name constraints of ${cert.serialHex}`)
    if (nc.permittedUris.length > 0 && !nc.permittedUris.some(c => uriConstraintMatches(c, host))) {
      throw new SvidInvalidError('bad-chain', `${leafId.toString()} is outside the name constraints of ${cert.serialHex}`)
    }
  }
  if (p.unknownCritical.length > 0) throw new SvidInvalidError('bad-chain', `signing certificate ${cert.serialHex} has unknown critical extension ${p.unknownCritical[0]!}`)
  const weak = keyProblem(cert.publicKey)
  if (weak !== undefined) throw new SvidInvalidError('weak-key', `signing certificate ${cert.serialHex}: ${weak}`)
  checkTime(cert, now, 'signing certificate')
}

// Name chaining plus the signature, not X509Certificate.checkIssued: OpenSSL's X509_check_issued also
// refuses an issuer whose keyUsage lacks keyCertSign, which turned that checkSigner rule (KU-2) into
// a misleading 'unknown-ca'. Every signer profile rule lives in checkSigner.
function signs (issuer: Certificate, subject: Certificate): boolean {
  // Name chaining on the exact DER bytes, then the signature. (X509Certificate.checkIssued would also
  // refuse an issuer without keyCertSign, hiding that reason behind "unknown CA"; checkSigner reports it.)
  return issuer.profile.subjectName.equals(subject.profile.issuerName) && subject.x509.verify(issuer.publicKey)
}

/**
 * Verifies a presented chain (leaf first, then any intermediates) against the bundle for the leaf's
 * trust domain, RFC 5280 style, and returns the peer's SPIFFE ID. Throws SvidInvalidError with a
 * `reason` category on any failure.
 */
export function verifyX509Svid (chain: Array<Buffer | Certificate>, bundle: TrustBundle, now: Date = new Date()): VerifiedSvid {
  if (chain.length === 0) throw new SvidInvalidError('not-svid', 'empty certificate chain')
  let certs: Certificate[]
  try {
    certs = chain.map(c => Buffer.isBuffer(c) ? parseCertificate(c) : c)
  } catch (err) {
    throw new SvidInvalidError('not-svid', `unreadable certificate: ${(err as Error).message}`)
  }
  const leaf = certs[0]!
  const id = leafSpiffeId(leaf)
  const roots = bundle.authoritiesFor(id.trustDomain)
  if (roots.length === 0) throw new SvidInvalidError('foreign-trust-domain', `no trust bundle for trust domain ${id.trustDomain}`)
  checkLeafProfile(leaf)
  checkTime(leaf, now, 'leaf certificate')

  const intermediates = certs.slice(1)
  const path = [leaf]
  let current = leaf
  for (let casBelow = 0; casBelow < MAX_CHAIN_DEPTH; casBelow++) {
    const root = roots.find(r => signs(r, current))
    if (root !== undefined) {
      checkSigner(root, casBelow, id, now)
      path.push(root)
      return { id, leaf, path }
    }
    const next = intermediates.find(c => !path.includes(c) && signs(c, current))
    if (next === undefined) {
      throw new SvidInvalidError('unknown-ca', `certificate ${current.serialHex} is not signed by an authority of trust domain ${id.trustDomain}`)
    }
    checkSigner(next, casBelow, id, now)
    path.push(next)
    current = next
  }
  throw new SvidInvalidError('bad-chain', `no path to a trust anchor within ${MAX_CHAIN_DEPTH} certificates`)
}
