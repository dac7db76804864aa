export const OID = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
  nameConstraints: '2.5.29.30',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  extensionRequest: '1.2.840.113549.1.9.14',
  // Gatehouse's own, non-critical: how a leaf's identity was first attested and when (see origin.ts).
  // The arc is IANA's documentation enterprise number (RFC 5612), which no organisation is ever
  // assigned, so it cannot collide with anyone's real extension; it is only read from leaves our
  // issuer signed. Move it under a registered Gatehouse PEN when there is one.
  renewalOrigin: '1.3.6.1.4.1.32473.1.1'
} as const

/** RFC 5280 KeyUsage bit numbers. */
export const KU = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6
} as const
