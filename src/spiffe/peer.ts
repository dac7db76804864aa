import { createHash } from 'node:crypto'
import type { TLSSocket } from 'node:tls'
import type { X509Certificate } from 'node:crypto'
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

/**
 * The peer's chain as presented (leaf first), raw DER, from the native X509Certificate objects (far
 * cheaper than getPeerCertificate(true), which turns every field of every certificate into JS).
 * After getPeerX509Certificate() Node exposes the rest of the chain only through issuerCertificate.
 */
export function peerChain (socket: TLSSocket, leaf: X509Certificate | undefined = socket.getPeerX509Certificate()): Buffer[] {
  const chain: Buffer[] = []
  let cert = leaf
  while (cert !== undefined && !chain.some(c => c.equals(cert!.raw))) {
    chain.push(cert.raw)
    cert = cert.issuerCertificate
  }
  return chain
}

// Verified peers, per trust bundle (a bundle change brings a new object, so nothing verified under
// the old one is reused), by the SHA-256 of the leaf. A peer reconnects with the same SVID many
// times; reading its chain into JS, parsing it and checking its signatures was most of the CPU of an
// inbound handshake. An entry is used only inside the validity of every certificate on its path.
interface Verified { peer: PeerIdentity, notBefore: number, notAfter: number }
const verifiedPeers = new WeakMap<TrustBundle, Map<string, Verified>>()
const PEERS_CACHED = 4096

export function verifyPeer (socket: TLSSocket, bundle: TrustBundle, now = new Date()): PeerIdentity {
  const leaf = socket.getPeerX509Certificate()
  if (leaf === undefined) throw new SvidInvalidError('no-client-certificate', 'peer presented no certificate')
  const certHash = leaf.fingerprint256.replaceAll(':', '').toLowerCase()
  let cache = verifiedPeers.get(bundle)
  const hit = cache?.get(certHash)
  if (hit !== undefined && now.getTime() >= hit.notBefore && now.getTime() < hit.notAfter) return hit.peer

  const chain = peerChain(socket, leaf)
  if (chain.length === 0) throw new SvidInvalidError('no-client-certificate', 'peer presented no certificate')
  const v = verifyX509Svid(chain, bundle, now)
  const peer: PeerIdentity = Object.freeze({
    id: v.id.toString(),
    trustDomain: v.id.trustDomain,
    segments: Object.freeze(v.id.path.split('/').slice(1)) as string[],
    serial: v.leaf.serialHex,
    certHash: createHash('sha256').update(v.leaf.der).digest('hex'),
    notAfter: v.leaf.notAfter
  })
  if (cache === undefined) { cache = new Map(); verifiedPeers.set(bundle, cache) }
  if (cache.size >= PEERS_CACHED) cache.clear()
  cache.set(peer.certHash, {
    peer,
    notBefore: Math.max(...v.path.map(c => c.notBefore.getTime())),
    notAfter: Math.min(...v.path.map(c => c.notAfter.getTime()))
  })
  return peer
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
