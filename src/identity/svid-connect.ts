import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { constants } from 'node:crypto'
import { ConnectTimeoutError, PeerIdentityError } from '../errors.ts'
import { verifyPeer, type PeerIdentity } from '../spiffe/peer.ts'
import type { Credentials } from './credentials.ts'

// Originating mTLS to a SPIFFE peer: present our current SVID (read at each connect, so a rotation
// applies to every new connection), then verify the server's chain with the X.509-SVID verifier and
// require the SPIFFE ID we expected. Hostnames are not what authenticates a mesh peer; its ID is.

export interface SvidConnectOptions {
  host: string
  port: number
  credentials: Credentials
  /** The SPIFFE ID the server must present. */
  expectedId: string
  /** Present our SVID as client certificate (false for a first CA request with only a token). */
  presentSvid?: boolean
  timeoutMs?: number
  alpn?: string[]
}

export function connectSvid (opts: SvidConnectOptions, done: (err: Error | null, socket?: TLSSocket, peer?: PeerIdentity) => void): TLSSocket {
  const own = opts.presentSvid === false ? undefined : opts.credentials.current
  const socket = tlsConnect({
    host: opts.host,
    port: opts.port,
    // The SVID's own context (built once per SVID); without an SVID, a plain one with the same settings.
    ...(own === undefined ? { minVersion: 'TLSv1.2', secureOptions: constants.SSL_OP_NO_TICKET } : { secureContext: own.clientContext() }),
    // Our verifier decides (Node 24 hides the presented chain when OpenSSL verifies it).
    rejectUnauthorized: false,
    ALPNProtocols: opts.alpn ?? ['http/1.1'],
    servername: undefined as unknown as string // no SNI: peers are addressed by SPIFFE ID, and IPs are not valid SNI
  })
  const timer = setTimeout(() => { socket.destroy(new ConnectTimeoutError(`TLS connection to ${opts.host}:${opts.port} timed out`)) }, opts.timeoutMs ?? 5000)
  let settled = false
  const settle = (err: Error | null, peer?: PeerIdentity): void => {
    if (settled) return
    settled = true
    clearTimeout(timer)
    if (err !== null) { socket.destroy(); done(err); return }
    done(null, socket, peer)
  }
  socket.once('secureConnect', () => {
    const bundle = opts.credentials.bundle
    if (bundle === undefined) { settle(new PeerIdentityError('no-bundle', 'no trust bundle loaded')); return }
    let peer: PeerIdentity
    try { peer = verifyPeer(socket, bundle) } catch (err) {
      settle(new PeerIdentityError((err as { reason?: string }).reason ?? 'not-svid', `${opts.host}:${opts.port} presented no acceptable SVID: ${(err as Error).message}`))
      return
    }
    if (peer.id !== opts.expectedId) {
      settle(new PeerIdentityError('unexpected-id', `${opts.host}:${opts.port} is ${peer.id}, expected ${opts.expectedId}`))
      return
    }
    settle(null, peer)
  })
  socket.once('error', (err) => { settle(err) })
  return socket
}
