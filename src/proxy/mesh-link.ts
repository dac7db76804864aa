import { connect as h2connect, type ClientHttp2Session } from 'node:http2'
import type { Logger } from '../log.ts'
import type { Credentials } from '../identity/credentials.ts'
import { connectSvid } from '../identity/svid-connect.ts'
import { destinationKey, type Route } from './routes.ts'

// Sidecar to sidecar: one multiplexed HTTP/2 connection over mTLS per destination (address and the
// SPIFFE ID it must present), as Linkerd does, for gRPC and HTTP/1.1 app traffic alike. A burst, a
// cold start or a rotation opens one connection per destination, not one per request in flight.
//
// Rotation: when our SVID changes, every link is closed gracefully (no new streams on it, the ones in
// flight finish, then the socket goes) and the next request opens a link presenting the new SVID.

export interface MeshLinksOptions {
  credentials: Credentials
  connectTimeoutMs: number
  /** A link with no stream for this long is closed (default 60 s). */
  idleTimeoutMs?: number
  logger: Logger
}

/** Per-stream receive window on a link: one busy stream must not stall behind the 64 KiB default. */
const LINK_WINDOW = 4 * 1024 * 1024

export class MeshLinks {
  private links = new Map<string, Promise<ClientHttp2Session>>()
  private readonly o: MeshLinksOptions
  constructor (o: MeshLinksOptions) { this.o = o }

  /** The open link to `route`, or a new one (TLS, the peer's SVID checked against the route's ID). */
  async session (route: Route): Promise<ClientHttp2Session> {
    const key = destinationKey(route)
    const pending = this.links.get(key)
    if (pending !== undefined) {
      const s = await pending.catch(() => undefined)
      if (s !== undefined && !s.closed && !s.destroyed) return s
      if (this.links.get(key) === pending) this.links.delete(key)
    }
    return await this.open(key, route)
  }

  private async open (key: string, route: Route): Promise<ClientHttp2Session> {
    // Another request may have started a link while this one waited: share it.
    const again = this.links.get(key)
    if (again !== undefined) return await again
    const link = new Promise<ClientHttp2Session>((resolve, reject) => {
      connectSvid({ host: route.address.host, port: route.address.port, credentials: this.o.credentials, expectedId: route.id, timeoutMs: this.o.connectTimeoutMs, alpn: ['h2'] }, (err, socket) => {
        if (err !== null || socket === undefined) { reject(err ?? new Error('no socket')); return }
        if (socket.alpnProtocol !== 'h2') {
          socket.destroy()
          reject(Object.assign(new Error(`${route.address.host}:${route.address.port} did not negotiate HTTP/2 (ALPN ${String(socket.alpnProtocol)})`), { code: 'GH_UPSTREAM_UNAVAILABLE' }))
          return
        }
        const session = h2connect(`https://${route.address.host}:${route.address.port}`, { createConnection: () => socket, settings: { enablePush: false, initialWindowSize: LINK_WINDOW } })
        const forget = (): void => { if (this.links.get(key) === link) this.links.delete(key) }
        session.on('error', (e: NodeJS.ErrnoException) => { this.o.logger.debug({ event: 'mesh_link.error', route: route.id, code: e.code }, 'mesh link error') })
        session.on('close', forget)
        session.on('goaway', forget)
        session.setTimeout(this.o.idleTimeoutMs ?? 60_000, () => { session.close() })
        resolve(session)
      })
    })
    this.links.set(key, link)
    link.catch(() => { if (this.links.get(key) === link) this.links.delete(key) })
    return await link
  }

  /**
   * Retires every link gracefully: no new streams on them, the streams in flight finish, then they
   * close. Used on rotation (new links present the new SVID) and when routes change.
   */
  retireAll (): void {
    const old = [...this.links.values()]
    this.links = new Map()
    for (const link of old) link.then(s => { if (!s.closed) s.close() }, () => {})
  }

  async close (): Promise<void> {
    const old = [...this.links.values()]
    this.links = new Map()
    await Promise.allSettled(old.map(async link => {
      const s = await link
      if (!s.destroyed) await new Promise<void>(resolve => { s.close(resolve) })
    }))
  }
}
