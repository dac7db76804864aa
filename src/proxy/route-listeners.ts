import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createNetServer, type Server, type Socket, type AddressInfo } from 'node:net'
import type { Logger } from '../log.ts'
import type { Route, RouteTable } from './routes.ts'

// Routes with `listen:` (as Consul's upstreams): a loopback listener per route, so an app that knows
// nothing about proxies connects in plaintext to 127.0.0.1:16379 (tcp) or sends plain HTTP to it
// (http), and the sidecar carries it to the route's destination over mTLS. Listeners follow the
// routes file: a new route opens one, a changed one is replaced, and one whose route disappears
// stops accepting at once and closes after its connections drain.

export interface RouteListenersOptions {
  routes: RouteTable
  /** A request on an http route's listener: forward it to that route. */
  http: (route: Route, req: IncomingMessage, res: ServerResponse) => void
  /** A connection on a tcp route's listener: carry it to that route. */
  tcp: (route: Route, socket: Socket) => void
  /** Per listener: further connections are refused (Node closes them) past this. */
  maxConnections: number
  logger: Logger
}

interface Open { spec: string, server: Server, port: number, sockets: Set<Socket> }

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
    // close() unbinds now and calls back when the last connection has ended.
    const done = new Promise<void>(resolve => { entry.server.close(() => { resolve() }) })
    draining.set(done, entry)
    void done.then(() => { draining.delete(done) })
  }

  const listen = async (route: Route): Promise<void> => {
    const l = route.listen!
    const server = route.protocol === 'tcp'
      ? createNetServer({ allowHalfOpen: true, pauseOnConnect: true }, socket => { o.tcp(route, socket) })
      : createHttpServer({ headersTimeout: 10_000, requestTimeout: 0, keepAliveTimeout: 60_000 }, (req, res) => { o.http(route, req, res) })
    server.maxConnections = o.maxConnections
    const sockets = new Set<Socket>()
    server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => { sockets.delete(s) }) })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(l.port, l.host, () => { server.off('error', reject); resolve() })
    })
    const port = (server.address() as AddressInfo).port
    open.set(addressKey(l), { spec: specOf(route), server, port, sockets })
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
      const cut = setTimeout(() => { for (const e of draining.values()) for (const s of e.sockets) s.destroy() }, drainMs)
      await Promise.all(draining.keys())
      clearTimeout(cut)
    }
  }
}
