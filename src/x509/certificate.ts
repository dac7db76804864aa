import { X509Certificate, type KeyObject } from 'node:crypto'
import { fromDer, toDer, children, bytesOf, oidOf, isContext, boolOf, Class, Type, type Asn1 } from './asn1.ts'
import { OID, KU } from './oids.ts'
import { decodeRenewalOrigin, type RenewalOrigin } from './origin.ts'

// A certificate as the SVID rules need to see it. node:crypto's X509Certificate answers the path
// questions (signature, issuer match, dates) but hides key-usage bits and every criticality flag,
// which the X.509-SVID profile depends on, so the extensions are decoded here from the DER.

export interface Extension<T> { critical: boolean, value: T }

export interface CertificateProfile {
  basicConstraints?: Extension<{ ca: boolean, pathLen?: number }>
  /** KU bit numbers that are set (see oids.KU). */
  keyUsage?: Extension<Set<number>>
  extKeyUsage?: Extension<string[]>
  subjectAltName?: Extension<{ uris: string[], dns: string[], ips: string[], emails: string[], other: number }>
  nameConstraints?: Extension<{ permittedUris: string[], excludedUris: string[] }>
  subjectKeyId?: Buffer
  authorityKeyId?: Buffer
  /** Gatehouse's renewal-origin extension, when present and well-formed (see origin.ts). */
  renewalOrigin?: RenewalOrigin
  /** True when the Subject DN holds no attributes (then the SAN must be critical, RFC 5280 4.1.2.6). */
  subjectEmpty: boolean
  /** Extension OIDs we do not understand that are marked critical: RFC 5280 says reject. */
  unknownCritical: string[]
  /** Raw DER of the issuer and subject Names, for exact (byte) name chaining. */
  issuerName: Buffer
  subjectName: Buffer
}

export interface Certificate {
  der: Buffer
  x509: X509Certificate
  profile: CertificateProfile
  publicKey: KeyObject
  serialHex: string
  notBefore: Date
  notAfter: Date
}

function generalNames (node: Asn1): { uris: string[], dns: string[], ips: string[], emails: string[], other: number } {
  const out = { uris: [] as string[], dns: [] as string[], ips: [] as string[], emails: [] as string[], other: 0 }
  for (const gn of children(node)) {
    if (gn.tagClass !== Class.CONTEXT_SPECIFIC) { out.other++; continue }
    const text = typeof gn.value === 'string' ? gn.value : ''
    if (gn.type === 6) out.uris.push(text)
    else if (gn.type === 2) out.dns.push(text)
    else if (gn.type === 1) out.emails.push(text)
    else if (gn.type === 7) out.ips.push(bytesOf(gn).toString('hex'))
    else out.other++
  }
  return out
}

function subtreeUris (node: Asn1 | undefined): string[] {
  if (node === undefined) return []
  const uris: string[] = []
  for (const subtree of children(node)) {
    const base = children(subtree)[0]
    if (base !== undefined && isContext(base, 6)) uris.push(base.value as string)
  }
  return uris
}

function decodeExtension (profile: CertificateProfile, id: string, critical: boolean, value: Buffer): void {
  switch (id) {
    case OID.basicConstraints: {
      const items = children(fromDer(value))
      let ca = false
      let pathLen: number | undefined
      for (const item of items) {
        if (item.type === Type.BOOLEAN) ca = boolOf(item)
        else if (item.type === Type.INTEGER) pathLen = bytesOf(item).readUIntBE(0, Math.min(6, bytesOf(item).length))
      }
      profile.basicConstraints = { critical, value: pathLen === undefined ? { ca } : { ca, pathLen } }
      return
    }
    case OID.keyUsage: {
      const raw = bytesOf(fromDer(value)).subarray(1) // first byte counts unused bits
      const set = new Set<number>()
      for (let bit = 0; bit < raw.length * 8; bit++) if ((raw[bit >> 3]! & (0x80 >> (bit & 7))) !== 0) set.add(bit)
      profile.keyUsage = { critical, value: set }
      return
    }
    case OID.extKeyUsage:
      profile.extKeyUsage = { critical, value: children(fromDer(value)).map(oidOf) }
      return
    case OID.subjectAltName:
      profile.subjectAltName = { critical, value: generalNames(fromDer(value)) }
      return
    case OID.nameConstraints: {
      const parts = children(fromDer(value))
      profile.nameConstraints = {
        critical,
        value: {
          permittedUris: subtreeUris(parts.find(p => isContext(p, 0))),
          excludedUris: subtreeUris(parts.find(p => isContext(p, 1)))
        }
      }
      return
    }
    case OID.subjectKeyId:
      profile.subjectKeyId = bytesOf(fromDer(value))
      return
    case OID.authorityKeyId: {
      const keyId = children(fromDer(value)).find(p => isContext(p, 0))
      if (keyId !== undefined) profile.authorityKeyId = bytesOf(keyId)
      return
    }
    case OID.renewalOrigin: {
      const origin = decodeRenewalOrigin(value)
      if (origin !== undefined) profile.renewalOrigin = origin
      if (critical) profile.unknownCritical.push(id) // we never mark it critical; someone else's use of the OID is not ours to accept
      return
    }
    default:
      if (critical) profile.unknownCritical.push(id)
  }
}

export function readProfile (der: Buffer): CertificateProfile {
  const [tbs] = children(fromDer(der))
  if (tbs === undefined) throw new Error('certificate has no TBSCertificate')
  const fields = children(tbs)
  const offset = fields[0] !== undefined && isContext(fields[0], 0) ? 1 : 0 // optional [0] version
  const issuer = fields[offset + 2]
  const subject = fields[offset + 4]
  if (issuer === undefined || subject === undefined) throw new Error('certificate has no issuer or subject')
  const profile: CertificateProfile = {
    subjectEmpty: children(subject).length === 0,
    unknownCritical: [],
    issuerName: toDer(issuer),
    subjectName: toDer(subject)
  }
  const extsWrapper = fields.find(f => isContext(f, 3))
  const exts = extsWrapper === undefined ? [] : children(children(extsWrapper)[0] ?? extsWrapper)
  const seen = new Set<string>()
  for (const ext of exts) {
    const parts = children(ext)
    const id = oidOf(parts[0]!)
    // RFC 5280 4.2: a certificate MUST NOT include more than one instance of an extension.
    if (seen.has(id)) throw new Error(`extension ${id} appears twice`)
    seen.add(id)
    const critical = parts.length === 3 && boolOf(parts[1]!)
    decodeExtension(profile, id, critical, bytesOf(parts[parts.length - 1]!))
  }
  return profile
}

export function parseCertificate (der: Buffer): Certificate {
  const x509 = new X509Certificate(der)
  return {
    der,
    x509,
    profile: readProfile(der),
    publicKey: x509.publicKey,
    serialHex: x509.serialNumber.toLowerCase(),
    notBefore: x509.validFromDate,
    notAfter: x509.validToDate
  }
}

/** Every certificate in a PEM text, in order. Non-certificate blocks are ignored. */
export function pemToDers (pem: string): Buffer[] {
  const out: Buffer[] = []
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g
  for (let m = re.exec(pem); m !== null; m = re.exec(pem)) out.push(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'))
  return out
}

export function derToPem (der: Buffer, label = 'CERTIFICATE'): string {
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n')
  return `-----BEGIN ${label}-----\n${b64}-----END ${label}-----\n`
}

export { KU }
