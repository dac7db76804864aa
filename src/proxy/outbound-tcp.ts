import type { Socket } from 'node:net'
import type { Logger } from '../log.ts'
import type { Credentials } from '../identity/credentials.ts'
import { connectSvid } from '../identity/svid-connect.ts'
import { PeerIdentityError } from '../errors.ts'
import type { Route } from './routes.ts'
import { TCP_ALPN, encodePreamble, relay } from './opaque-tcp.ts'

// The caller's side of opaque TCP: a connection accepted on a tcp route's loopback listener is
// carried to the route's destination over its own mTLS connection (ALPN gatehouse-tcp/1), the
// destination pinned to the route's SPIFFE ID, then the preamble naming the callee's app port, then
// the app's bytes both ways. The callee's sidecar decides and logs; a refusal there closes the
// connection, which is all a TCP client can be told.

export interface TcpDialOptions {
  credentials: Credentials
  connectTimeoutMs: number
  idleTimeoutMs: number
  logger: Logger
}

export function carryTcp (route: Route, local: Socket, o: TcpDialOptions): void {
  local.on('error', () => { /* settled by the relay, or destroyed below */ })
  connectSvid({ host: route.address.host, port: route.address.port, credentials: o.credentials, expectedId: route.id, timeoutMs: o.connectTimeoutMs, alpn: [TCP_ALPN] }, (err, tls) => {
    if (err !== null || tls === undefined) {
      const refused = err instanceof PeerIdentityError
      o.logger[refused ? 'error' : 'warn']({ event: refused ? 'outbound.peer_refused' : 'outbound.failed', protocol: 'tcp', code: (err as NodeJS.ErrnoException | null)?.code, route: route.host, destination: route.id, detail: err?.message }, refused ? 'destination did not present the expected SPIFFE ID' : 'cannot reach the route\'s destination')
      local.destroy()
      return
    }
    if (tls.alpnProtocol !== TCP_ALPN) {
      o.logger.warn({ event: 'outbound.failed', protocol: 'tcp', route: route.host, destination: route.id, alpn: tls.alpnProtocol }, 'destination does not serve opaque TCP (an older sidecar?)')
      tls.destroy()
      local.destroy()
      return
    }
    tls.write(encodePreamble(route.appPort!))
    const r = relay(local, tls, o.idleTimeoutMs)
    void r.ended.then(end => { o.logger.debug({ event: 'tcp.closed', route: route.host, destination: route.id, ...end }, 'outbound TCP connection closed') })
    local.resume()
  })
}
