import type { Server as TlsServer, TLSSocket } from 'node:tls'
import type { Socket } from 'node:net'

// A cap on connections that have not finished their TLS handshake, apart from --max-connections.
// Connections that never send a ClientHello (or send half of one) cost memory until the handshake
// timeout; with a cap they cannot fill the budget meant for established callers. At the cap the
// oldest unfinished handshake is cut, not the new one: a flood then churns through its own
// connections while a real caller, whose handshake takes milliseconds, still gets through.

export interface HandshakeGuard { pending: () => number }

export function guardHandshakes (server: TlsServer, max: number, onEvict: (socket: Socket) => void): HandshakeGuard {
  /** Raw sockets still in their handshake, oldest first (a Set keeps insertion order). */
  const pending = new Set<Socket>()
  server.prependListener('connection', (raw: Socket) => {
    if (pending.size >= max) {
      const oldest = pending.values().next().value!
      pending.delete(oldest)
      onEvict(oldest)
      oldest.destroy()
    }
    pending.add(raw)
    raw.once('close', () => { pending.delete(raw) })
  })
  server.prependListener('secureConnection', (tls: TLSSocket) => {
    // The TLS socket Node's server wraps around the raw one keeps it as `_parent` (lib/_tls_wrap.js);
    // test/inbound-flood.test.ts fails if a Node release stops doing so.
    pending.delete((tls as unknown as { _parent: Socket })._parent)
  })
  return { pending: () => pending.size }
}
