import { createHash } from 'node:crypto'
import type { TLSSocket, PeerCertificate, DetailedPeerCertificate } from 'node:tls'
import { SvidInvalidError } from '../errors.ts'
import { verifyX509Svid } from './svid.ts'
import type { TrustBundle } from './bundle.ts'

// A TLS peer's SPIFFE identity, verified with the project's X.509-SVID rules on top of whatever the
// TLS stack already checked (Node accepts CA leaves, two URI SANs and keyCertSign leaves).

export interface PeerIdentity {
  id: string
  trustDomain: string
  /** SPIFFE ID path segments, split once per connection for policy matching. */
  segments: string[]
  serial: string
  /** SHA-256 of the peer leaf's DER, hex: the Hash= of x-forwarded-client-cert. */
  certHash: string
  notAfter: Date
}

/** The peer's chain as presented (leaf first), raw DER. */
export function peerChain (socket: TLSSocket): Buffer[] {
  const chain: Buffer[] = []
  let cert: PeerCertificate | DetailedPeerCertificate | undefined = socket.getPeerCertificate(true)
  while (cert?.raw !== undefined && !chain.some(c => c.equals(cert!.raw))) {
    chain.push(cert.raw)
    cert = (cert as DetailedPeerCertificate).issuerCertificate
  }
  return chain
}

export function verifyPeer (socket: TLSSocket, bundle: TrustBundle, now = new Date()): PeerIdentity {
  const chain = peerChain(socket)
  if (chain.length === 0) throw new SvidInvalidError('no-client-certificate', 'peer presented no certificate')
  const v = verifyX509Svid(chain, bundle, now)
  return {
    id: v.id.toString(),
    trustDomain: v.id.trustDomain,
    segments: v.id.path.split('/').slice(1),
    serial: v.leaf.serialHex,
    certHash: createHash('sha256').update(v.leaf.der).digest('hex'),
    notAfter: v.leaf.notAfter
  }
}

/** OpenSSL's verdict on a refused handshake, as the same reason categories the SVID verifier uses. */
export function handshakeFailureReason (err: NodeJS.ErrnoException): string {
  const code = `${err.code ?? ''} ${err.message}`
  if (/CERT_HAS_EXPIRED|certificate expired/i.test(code)) return 'expired'
  if (/CERT_NOT_YET_VALID|not yet valid/i.test(code)) return 'not-yet-valid'
  if (/UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY_LEAF|SELF_SIGNED|unknown ca|self.signed|CERT_SIGNATURE_FAILURE|certificate verify failed/i.test(code)) return 'unknown-ca'
  if (/INVALID_PURPOSE|unsupported certificate purpose|INVALID_CA/i.test(code)) return 'not-svid'
  if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|certificate required/i.test(code)) return 'no-client-certificate'
  if (/VERSION|protocol version|unsupported protocol|NO_SHARED_CIPHER|no shared cipher|no protocols available/i.test(code)) return 'tls-version-or-cipher'
  if (/ETIMEDOUT|timeout/i.test(code)) return 'handshake-timeout'
  if (/ECONNRESET|socket hang up|EPIPE/i.test(code)) return 'connection-reset'
  if (/wrong version number|http request|packet length too long|unexpected eof/i.test(code)) return 'not-tls'
  return 'handshake-error'
}
