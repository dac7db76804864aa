import { createServer as createNetServer, type Server, type Socket, type AddressInfo } from 'node:net'
import type { Logger } from '../log.ts'
import type { Route, RouteTable } from './routes.ts'
import type { H1Server } from './h1-server.ts'

// Routes with `listen:` (as Consul's upstreams): a loopback listener per route, so an app that knows
// nothing about proxies connects in plaintext to 127.0.0.1:16379 (tcp) or sends plain HTTP to it
// (http), and the sidecar carries it to the route's destination over mTLS. Listeners follow the
// routes file: a new route opens one, a changed one is replaced, and one whose route disappears
// stops accepting at once and closes after its connections drain.

export interface RouteListenersOptions {
  routes: RouteTable
  /** An http route's HTTP/1.1 server (h1-server.ts), whose requests go to that route. */
  http: (route: Route) => H1Server
  /** A connection on a tcp route's listener: carry it to that route. */
  tcp: (route: Route, socket: Socket) => void
  /** Per listener: further connections are refused (Node closes them) past this. */
  maxConnections: number
  logger: Logger
}

interface Open { spec: string, server: Server, port: number, sockets: Set<Socket>, h1: H1Server | undefined }

export interface RouteListeners {
  /** The bound port of each listen address (`127.0.0.1:0` in tests gets a free one). */
  port: (listen: { host: string, port: number }) => number | undefined
  /** Resolves once the listeners match the current routes (after a start or a reload). */
  settled: () => Promise<void>
  /** Stop accepting; connections get `drainMs` to end on their own, then are cut. */
  close: (drainMs: number) => Promise<void>
}

const addressKey = (l: { host: string, port: number }): string => `${l.host}:${l.port}`
/** What a listener serves: a route change that alters any of it replaces the listener. */
const specOf = (r: Route): string => JSON.stringify([r.protocol, r.host, r.port, r.address, r.id, r.appPort])
const RETRY_MS = 1000

export function startRouteListeners (o: RouteListenersOptions): RouteListeners {
  const open = new Map<string, Open>()
  /** Listeners that stopped accepting, until their last connection ends. */
  const draining = new Map<Promise<void>, Open>()
  let closed = false
  let retry: NodeJS.Timeout | undefined
  let current: Promise<void> = Promise.resolve()

  const stop = (key: string, entry: Open, why: string): void => {
    open.delete(key)
    o.logger.info({ event: 'route.listener_closing', listen: key, why }, 'route listener stops accepting; open connections drain')
    // close() unbinds now and calls back when the last connection has ended; kept-alive HTTP
    // connections with no request in progress end now, the others after their answer.
    const done = new Promise<void>(resolve => { entry.server.close(() => { resolve() }) })
    entry.h1?.closeIdle()
    draining.set(done, entry)
    // The listener's HTTP server (its deadline sweep) goes with its last connection.
    void done.then(() => { draining.delete(done); entry.h1?.closeAll() })
  }

  const listen = async (route: Route): Promise<void> => {
    const l = route.listen!
    const h1 = route.protocol === 'tcp' ? undefined : o.http(route)
    const server = h1 === undefined
      ? createNetServer({ allowHalfOpen: true, pauseOnConnect: true }, socket => { o.tcp(route, socket) })
      : createNetServer({ noDelay: true }, socket => { h1.accept(socket) })
    server.maxConnections = o.maxConnections
    const sockets = new Set<Socket>()
    server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => { sockets.delete(s) }) })
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(l.port, l.host, () => { server.off('error', reject); resolve() })
      })
    } catch (err) { h1?.closeAll(); throw err }
    const port = (server.address() as AddressInfo).port
    open.set(addressKey(l), { spec: specOf(route), server, port, sockets, h1 })
    o.logger.info({ event: 'route.listening', host: l.host, port, route: route.host, protocol: route.protocol, destination: route.id }, 'route listener ready')
  }

  const reconcile = async (): Promise<void> => {
    if (closed) return
    const wanted = new Map(o.routes.routes.filter(r => r.listen !== undefined).map(r => [addressKey(r.listen!), r]))
    for (const [key, entry] of open) {
      const r = wanted.get(key)
      if (r === undefined) stop(key, entry, 'route removed')
      else if (specOf(r) !== entry.spec) stop(key, entry, 'route changed')
    }
    let failed = false
    for (const [key, route] of wanted) {
      if (open.has(key)) continue
      try { await listen(route) } catch (err) {
        failed = true
        o.logger.error({ event: 'route.listen_failed', listen: key, route: route.host, code: (err as NodeJS.ErrnoException).code, detail: (err as Error).message }, 'cannot open the route\'s listen address; retrying')
      }
    }
    clearTimeout(retry)
    if (failed && !closed) { retry = setTimeout(() => { current = current.then(reconcile) }, RETRY_MS); retry.unref() }
  }

  // One reconcile at a time, in order: a burst of reloads ends with the listeners of the last one.
  const schedule = (): void => { current = current.then(reconcile) }
  o.routes.onChange(schedule)
  schedule()

  return {
    port: l => open.get(addressKey(l))?.port,
    settled: async () => { await current },
    close: async (drainMs) => {
      closed = true
      clearTimeout(retry)
      await current
      for (const [key, entry] of open) stop(key, entry, 'shutdown')
      const cut = setTimeout(() => { for (const e of draining.values()) { e.h1?.closeAll(); for (const s of e.sockets) s.destroy() } }, drainMs)
      await Promise.all(draining.keys())
      clearTimeout(cut)
    }
  }
}
