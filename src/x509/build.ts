import { sign, randomBytes, type KeyObject } from 'node:crypto'
import { isIPv4, isIPv6 } from 'node:net'
import forge from 'node-forge'
import * as A from './asn1.ts'
import { OID, KU } from './oids.ts'
import { spkiDer, keyIdentifier, signatureAlgorithm } from './keys.ts'
import { encodeRenewalOrigin, type RenewalOrigin } from './origin.ts'

// Builds and signs X.509 v3 certificates: node-forge's ASN.1 layer encodes the DER, node:crypto
// signs (ECDSA and RSA). Only the two profiles Gatehouse issues exist here: signing (CA)
// certificates and workload leaves; there is no free-form extension list to get wrong.

export interface NameAttrs { commonName?: string, organization?: string }

export interface CertificateSpec {
  /** Subject public key. */
  publicKey: KeyObject
  subject: NameAttrs
  notBefore: Date
  notAfter: Date
  /** Where the signature comes from; omit both for a self-signed root (then signerKey is the subject's private key). */
  signerKey: KeyObject
  /** The issuer certificate's DER; omitted for self-signed. */
  issuerDer?: Buffer
  /** SPIFFE ID for the single URI SAN. */
  uri?: string
  dns?: string[]
  ips?: string[]
  ca?: { pathLen?: number }
  /** Leaves only: how the identity was first attested and when (the renewal-origin extension). */
  origin?: RenewalOrigin
}

function encodeName (attrs: NameAttrs): A.Asn1 {
  const rdns: A.Asn1[] = []
  if (attrs.organization !== undefined) rdns.push(A.set(A.seq(A.oid(OID.organization), A.utf8(attrs.organization))))
  if (attrs.commonName !== undefined) rdns.push(A.set(A.seq(A.oid(OID.commonName), A.utf8(attrs.commonName))))
  return A.seq(...rdns)
}

function extension (id: string, critical: boolean, value: A.Asn1): A.Asn1 {
  const parts = [A.oid(id)]
  if (critical) parts.push(A.bool(true))
  parts.push(A.octets(A.toDer(value)))
  return A.seq(...parts)
}

/** Issuer subject DER and key id, read from the issuer certificate (copied byte for byte so chains match). */
function issuerParts (issuerDer: Buffer): { name: A.Asn1, keyId?: Buffer } {
  const tbs = A.children(A.fromDer(issuerDer))[0]!
  const fields = A.children(tbs)
  const offset = A.isContext(fields[0]!, 0) ? 1 : 0
  const name = fields[offset + 4]!
  const exts = fields.find(f => A.isContext(f, 3))
  for (const ext of exts === undefined ? [] : A.children(A.children(exts)[0]!)) {
    const parts = A.children(ext)
    if (A.oidOf(parts[0]!) === OID.subjectKeyId) return { name, keyId: A.bytesOf(A.fromDer(A.bytesOf(parts[parts.length - 1]!))) }
  }
  return { name }
}

function ipBytes (ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number))
  if (!isIPv6(ip)) throw new Error(`not an IP address: ${ip}`)
  const [head = '', tail = ''] = ip.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = ip.includes('::') ? (tail === '' ? [] : tail.split(':')) : []
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t]
  return Buffer.from(groups.flatMap(g => { const n = parseInt(g, 16); return [n >> 8, n & 0xff] }))
}

export function randomSerial (): Buffer {
  // 128 random bits, top bit cleared so the INTEGER stays positive at 16 bytes (CA/B BR: >= 64 bits).
  const b = randomBytes(16)
  b[0]! &= 0x7f
  if (b[0] === 0) b[0] = 1
  return b
}

export function buildCertificate (spec: CertificateSpec, serial: Buffer = randomSerial()): Buffer {
  const alg = signatureAlgorithm(spec.signerKey)
  const algId = alg.rsa ? A.seq(A.oid(alg.oid), A.nul()) : A.seq(A.oid(alg.oid))
  const subjectName = encodeName(spec.subject)
  const issuer = spec.issuerDer === undefined ? { name: subjectName, keyId: keyIdentifier(spec.publicKey) } : issuerParts(spec.issuerDer)
  const subjectEmpty = spec.subject.commonName === undefined && spec.subject.organization === undefined

  const exts: A.Asn1[] = []
  if (spec.ca !== undefined) {
    const bc = [A.bool(true)]
    if (spec.ca.pathLen !== undefined) bc.push(A.smallInt(spec.ca.pathLen))
    exts.push(extension(OID.basicConstraints, true, A.seq(...bc)))
    exts.push(extension(OID.keyUsage, true, A.namedBits([KU.keyCertSign, KU.cRLSign])))
  } else {
    exts.push(extension(OID.basicConstraints, true, A.seq()))
    exts.push(extension(OID.keyUsage, true, A.namedBits([KU.digitalSignature])))
    exts.push(extension(OID.extKeyUsage, false, A.seq(A.oid(OID.serverAuth), A.oid(OID.clientAuth))))
    // Non-critical: peers (ours or anyone's) that do not know it ignore it; only the CA reads it.
    if (spec.origin !== undefined) exts.push(extension(OID.renewalOrigin, false, encodeRenewalOrigin(spec.origin)))
  }
  const names: A.Asn1[] = []
  if (spec.uri !== undefined) names.push(A.implicitPrimitive(6, spec.uri))
  for (const d of spec.dns ?? []) names.push(A.implicitPrimitive(2, d))
  for (const ip of spec.ips ?? []) names.push(A.implicitPrimitive(7, ipBytes(ip)))
  // RFC 5280 4.1.2.6 / X509-SVID 3.1: with an empty subject the SAN must be critical.
  if (names.length > 0) exts.push(extension(OID.subjectAltName, subjectEmpty, A.seq(...names)))
  exts.push(extension(OID.subjectKeyId, false, A.octets(keyIdentifier(spec.publicKey))))
  if (issuer.keyId !== undefined) exts.push(extension(OID.authorityKeyId, false, A.seq(A.implicitPrimitive(0, issuer.keyId))))

  const tbs = A.seq(
    A.explicit(0, A.smallInt(2)),
    A.uint(serial),
    algId,
    issuer.name,
    A.seq(A.time(spec.notBefore), A.time(spec.notAfter)),
    subjectName,
    A.fromDer(spkiDer(spec.publicKey)),
    A.explicit(3, A.seq(...exts))
  )
  const tbsDer = A.toDer(tbs)
  const signature = sign(alg.digest, tbsDer, spec.signerKey)
  const cert = forge.asn1.create(A.Class.UNIVERSAL, A.Type.SEQUENCE, true, [A.fromDer(tbsDer), algId, A.bits(signature)])
  return A.toDer(cert)
}
