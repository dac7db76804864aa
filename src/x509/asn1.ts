import forge from 'node-forge'

// Thin Buffer-facing wrappers over node-forge's ASN.1 layer (which works on binary strings).
// node-forge cannot sign with ECDSA, so it is used here only to encode and decode DER; all key
// operations go through node:crypto.

const { asn1 } = forge
export type Asn1 = forge.asn1.Asn1
export const { Class, Type } = asn1

export function fromDer (der: Buffer): Asn1 {
  // strict + parseAllBytes: trailing garbage or BER-isms are an error, not something to guess about.
  const options = { strict: true, parseAllBytes: true, decodeBitStrings: false } as unknown as boolean // @types lag: forge 1.x takes an options object
  return asn1.fromDer(forge.util.createBuffer(der.toString('binary')), options)
}

export function toDer (node: Asn1): Buffer {
  return Buffer.from(asn1.toDer(node).getBytes(), 'binary')
}

export const seq = (...items: Asn1[]): Asn1 => asn1.create(Class.UNIVERSAL, Type.SEQUENCE, true, items)
export const set = (...items: Asn1[]): Asn1 => asn1.create(Class.UNIVERSAL, Type.SET, true, items)
export const oid = (dotted: string): Asn1 => asn1.create(Class.UNIVERSAL, Type.OID, false, asn1.oidToDer(dotted).getBytes())
export const nul = (): Asn1 => asn1.create(Class.UNIVERSAL, Type.NULL, false, '')
export const bool = (v: boolean): Asn1 => asn1.create(Class.UNIVERSAL, Type.BOOLEAN, false, v ? '\xff' : '\x00')
export const octets = (b: Buffer): Asn1 => asn1.create(Class.UNIVERSAL, Type.OCTETSTRING, false, b.toString('binary'))
export const utf8 = (s: string): Asn1 => asn1.create(Class.UNIVERSAL, Type.UTF8, false, forge.util.encodeUtf8(s))
export const ia5 = (s: string): Asn1 => asn1.create(Class.UNIVERSAL, Type.IA5STRING, false, s)

/** A DER INTEGER from unsigned big-endian bytes (adds the 0x00 sign byte when needed). */
export function uint (b: Buffer): Asn1 {
  let i = 0
  while (i < b.length - 1 && b[i] === 0) i++
  let v = b.subarray(i)
  if ((v[0]! & 0x80) !== 0) v = Buffer.concat([Buffer.from([0]), v])
  return asn1.create(Class.UNIVERSAL, Type.INTEGER, false, v.toString('binary'))
}

export const smallInt = (n: number): Asn1 => asn1.create(Class.UNIVERSAL, Type.INTEGER, false, asn1.integerToDer(n).getBytes())

/** A BIT STRING holding whole bytes (signatures, public keys). */
export const bits = (b: Buffer): Asn1 => asn1.create(Class.UNIVERSAL, Type.BITSTRING, false, `\x00${b.toString('binary')}`)

/** A named-bit BIT STRING (KeyUsage) in DER's minimal form: trailing zero bits dropped. */
export function namedBits (bitNumbers: number[]): Asn1 {
  const max = Math.max(...bitNumbers)
  const bytes = Buffer.alloc((max >> 3) + 1)
  for (const n of bitNumbers) bytes[n >> 3]! |= 0x80 >> (n & 7)
  const unused = 7 - (max & 7)
  return asn1.create(Class.UNIVERSAL, Type.BITSTRING, false, String.fromCharCode(unused) + bytes.toString('binary'))
}

/** Context-specific [n]: explicit wraps one node, implicit retags a primitive value. */
export const explicit = (n: number, inner: Asn1): Asn1 => asn1.create(Class.CONTEXT_SPECIFIC, n, true, [inner])
export const implicitPrimitive = (n: number, value: Buffer | string): Asn1 =>
  asn1.create(Class.CONTEXT_SPECIFIC, n, false, typeof value === 'string' ? value : value.toString('binary'))

export function time (d: Date): Asn1 {
  // RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
  return d.getUTCFullYear() < 2050
    ? asn1.create(Class.UNIVERSAL, Type.UTCTIME, false, asn1.dateToUtcTime(d))
    : asn1.create(Class.UNIVERSAL, Type.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(d))
}

/** GeneralizedTime to the millisecond (DER: a fraction only when non-zero, without trailing zeros). */
export function generalizedTimeMs (d: Date): Asn1 {
  const iso = d.toISOString() // YYYY-MM-DDTHH:MM:SS.mmmZ
  const fraction = iso.slice(20, 23).replace(/0+$/, '')
  return asn1.create(Class.UNIVERSAL, Type.GENERALIZEDTIME, false, `${iso.slice(0, 19).replace(/[-T:]/g, '')}${fraction === '' ? '' : `.${fraction}`}Z`)
}

export const children = (node: Asn1): Asn1[] => Array.isArray(node.value) ? node.value : []
export const bytesOf = (node: Asn1): Buffer => Buffer.from(typeof node.value === 'string' ? node.value : '', 'binary')
export const oidOf = (node: Asn1): string => asn1.derToOid(forge.util.createBuffer(node.value as string))
export const isContext = (node: Asn1, n: number): boolean => node.tagClass === Class.CONTEXT_SPECIFIC && node.type === n
export const boolOf = (node: Asn1): boolean => node.type === Type.BOOLEAN && (node.value as string) !== '\x00'
