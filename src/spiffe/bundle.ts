import { BundleInvalidError } from '../errors.ts'
import { parseCertificate, pemToDers, derToPem, type Certificate } from '../x509/certificate.ts'
import { KU } from '../x509/oids.ts'
import { SpiffeId, parseTrustDomain } from './id.ts'

// Trust bundles: the X.509 authorities per trust domain. A bundle file may hold several roots (so a
// root can be rotated without downtime) and several trust domains (federation). A root's trust domain
// is its SPIFFE URI SAN (spiffe://TD, no path, per X509-SVID 3.2); roots without one belong to the
// default trust domain the operator names.

export interface SpiffeBundleJson {
  keys: Array<{ use?: string, kty?: string, kid?: string, x5c?: string[], [k: string]: unknown }>
  spiffe_sequence?: number
  spiffe_refresh_hint?: number
}

function authorityTrustDomain (cert: Certificate, defaultTrustDomain: string | undefined, where: string): string {
  const bc = cert.profile.basicConstraints
  if (bc?.value.ca !== true || cert.profile.keyUsage?.value.has(KU.keyCertSign) !== true) {
    throw new BundleInvalidError(`${where}: certificate ${cert.serialHex} is not a CA certificate (cA and keyCertSign required)`)
  }
  const uris = cert.profile.subjectAltName?.value.uris.filter(u => u.startsWith('spiffe:')) ?? []
  if (uris.length > 1) throw new BundleInvalidError(`${where}: certificate ${cert.serialHex} has ${uris.length} SPIFFE IDs`)
  if (uris.length === 1) {
    const id = SpiffeId.tryParse(uris[0]!)
    if (id === undefined || !id.isRoot) {
      throw new BundleInvalidError(`${where}: signing certificate ${cert.serialHex} has SPIFFE ID ${JSON.stringify(uris[0])}; a CA's ID must be spiffe://<trust-domain> with no path`)
    }
    return id.trustDomain
  }
  if (defaultTrustDomain === undefined) {
    throw new BundleInvalidError(`${where}: certificate ${cert.serialHex} names no trust domain (no spiffe:// URI SAN) and no default trust domain is configured`)
  }
  return defaultTrustDomain
}

export class TrustBundle {
  private readonly byDomain: Map<string, Certificate[]>

  private constructor (byDomain: Map<string, Certificate[]>) {
    this.byDomain = byDomain
  }

  static fromCertificates (certs: Certificate[], opts: { defaultTrustDomain?: string, source?: string } = {}): TrustBundle {
    const where = opts.source ?? 'trust bundle'
    const td = opts.defaultTrustDomain === undefined ? undefined : parseTrustDomain(opts.defaultTrustDomain)
    if (certs.length === 0) throw new BundleInvalidError(`${where}: holds no certificates`)
    const byDomain = new Map<string, Certificate[]>()
    for (const cert of certs) {
      const domain = authorityTrustDomain(cert, td, where)
      const list = byDomain.get(domain) ?? []
      if (!list.some(c => c.der.equals(cert.der))) list.push(cert)
      byDomain.set(domain, list)
    }
    return new TrustBundle(byDomain)
  }

  static fromPem (pem: string, opts: { defaultTrustDomain?: string, source?: string } = {}): TrustBundle {
    const certs: Certificate[] = []
    for (const der of pemToDers(pem)) {
      try { certs.push(parseCertificate(der)) } catch (err) {
        throw new BundleInvalidError(`${opts.source ?? 'trust bundle'}: unreadable certificate: ${(err as Error).message}`)
      }
    }
    return TrustBundle.fromCertificates(certs, opts)
  }

  /**
   * The SPIFFE bundle format (SPIFFE Trust Domain and Bundle, section 6): a JWKS whose x509-svid
   * entries each carry one CA certificate in x5c. Entries with another use, or no/empty x5c, are
   * ignored (6.2); of several x5c values only the first counts (6.2).
   */
  static fromSpiffeJson (doc: SpiffeBundleJson, trustDomain: string, source = 'SPIFFE bundle'): TrustBundle {
    if (doc === null || typeof doc !== 'object' || !Array.isArray(doc.keys)) throw new BundleInvalidError(`${source}: "keys" must be an array`)
    const certs: Certificate[] = []
    for (const key of doc.keys) {
      if (key?.use !== 'x509-svid' || !Array.isArray(key.x5c) || key.x5c.length === 0) continue
      try {
        certs.push(parseCertificate(Buffer.from(String(key.x5c[0]), 'base64')))
      } catch (err) {
        throw new BundleInvalidError(`${source}: x5c of an x509-svid entry is not a certificate: ${(err as Error).message}`)
      }
    }
    // Every authority in a per-domain document belongs to that domain, whatever its SAN says.
    const td = parseTrustDomain(trustDomain)
    for (const c of certs) authorityTrustDomain(c, td, source)
    return new TrustBundle(new Map(certs.length === 0 ? [] : [[td, certs]]))
  }

  /** The publisher side of the SPIFFE bundle format: one x5c per entry, use x509-svid, never a kid (6.1). */
  toSpiffeJson (trustDomain: string, sequence = 1): SpiffeBundleJson {
    return {
      keys: this.authoritiesFor(trustDomain).map(c => {
        const jwk = c.publicKey.export({ format: 'jwk' }) as Record<string, unknown>
        return { ...jwk, use: 'x509-svid', x5c: [c.der.toString('base64')] }
      }),
      spiffe_sequence: sequence
    }
  }

  authoritiesFor (trustDomain: string): Certificate[] {
    return this.byDomain.get(trustDomain) ?? []
  }

  has (trustDomain: string): boolean {
    return this.byDomain.has(trustDomain)
  }

  get trustDomains (): string[] {
    return [...this.byDomain.keys()]
  }

  /** All authorities as PEM, for node:tls `ca` (path building), in a stable order. */
  toPem (): string {
    return [...this.byDomain.values()].flat().map(c => derToPem(c.der)).join('')
  }
}
