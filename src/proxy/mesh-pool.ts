import type { Logger } from '../log.ts'
import type { Credentials } from '../identity/credentials.ts'
import { connectSvid } from '../identity/svid-connect.ts'
import { AppH1Pool } from './app-h1-pool.ts'
import { destinationKey, type Route } from './routes.ts'

// Sidecar to sidecar for the app's HTTP/1.1 calls, with --mesh-http1: kept-alive HTTP/1.1
// connections over mTLS per destination (address and the SPIFFE ID it must present), as Istio does
// by default, on the same pool and parser as the app side (app-h1-pool.ts). Against the default, one
// multiplexed HTTP/2 link per destination (mesh-link.ts, which gRPC always takes), it measured 25-29 %
// less CPU for the two sidecars at a fixed rate and a fraction of the p99, the same within the noise
// at saturation (bench/README.md, issue 21); the price is a connection per call in flight on a
// burst, a cold start or a rotation, which the link avoids (issue 14), so it is not the default.
//
// A connection is handed to the pool only once the peer's chain and SPIFFE ID are verified: no
// request byte is written to a peer that is not the route's. Rotation or a routes change retires
// the pools: their idle connections close, busy ones after the requests already queued on them,
// and new requests open connections presenting the new SVID.

export interface MeshPoolsOptions {
  credentials: Credentials
  connectTimeoutMs: number
  responseTimeoutMs: number
  logger: Logger
}

/** Below the inbound listener's keep-alive timeout (60 s; 30 s under a small --memory-limit), so the callee rarely closes a connection as we send on it. */
const MESH_KEEPALIVE_MS = 15_000

export class MeshPools {
  private pools = new Map<string, AppH1Pool>()
  private readonly o: MeshPoolsOptions
  constructor (o: MeshPoolsOptions) { this.o = o }

  /** The pool for `route`, made on first use. */
  pool (route: Route): AppH1Pool {
    const key = destinationKey(route)
    let pool = this.pools.get(key)
    if (pool === undefined) {
      const { credentials, connectTimeoutMs } = this.o
      pool = new AppH1Pool(route.address, {
        responseTimeoutMs: this.o.responseTimeoutMs,
        connectTimeoutMs,
        keepAliveMs: MESH_KEEPALIVE_MS,
        connect: (done) => {
          const socket = connectSvid({ host: route.address.host, port: route.address.port, credentials, expectedId: route.id, timeoutMs: connectTimeoutMs, alpn: ['http/1.1'] }, (err) => {
            if (err !== null) { done(err); return }
            // The callee chose HTTP/2 only if it offers nothing else: then this pool cannot talk to it.
            if (socket.alpnProtocol !== false && socket.alpnProtocol !== 'http/1.1') {
              socket.destroy()
              done(Object.assign(new Error(`${route.address.host}:${route.address.port} negotiated ${socket.alpnProtocol}, not HTTP/1.1`), { code: 'GH_UPSTREAM_UNAVAILABLE' }))
              return
            }
            socket.setNoDelay(true)
            done(null, socket)
          })
        }
      })
      this.pools.set(key, pool)
    }
    return pool
  }

  /** Rotation, a routes change, our own quarantine: new requests get new connections; the old ones finish what they carry. */
  retireAll (): void {
    const old = [...this.pools.values()]
    this.pools = new Map()
    for (const p of old) p.retire()
  }

  async close (): Promise<void> {
    const old = [...this.pools.values()]
    this.pools = new Map()
    await Promise.all(old.map(async p => { await p.close() }))
  }
}
