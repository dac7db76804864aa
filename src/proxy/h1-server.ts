import type { Socket } from 'node:net'
import { sweepInterval } from './send-deadline.ts'
import { H1Connection, type H1ConnectionOptions, type H1Handlers } from './h1-server-connection.ts'

// Gatehouse's own HTTP/1.1 server on Node's llhttp binding, for every listener: the inbound one (TLS,
// inbound-h1.ts), the outbound one and each http route's (the app's plain HTTP, outbound.ts). It keeps the live
// connections (h1-server-connection.ts), checks their headers and request deadlines, and closes them
// on shutdown: what node:http's server did, without an IncomingMessage and a ServerResponse per
// request (issue 21).

export interface H1Server {
  /** Reads HTTP/1.1 from `socket` from now on (a verified TLS connection, or a plain one). */
  accept: (socket: Socket) => H1Connection
  /** Shutdown: idle connections close now, the others after the answer in progress. */
  closeIdle: () => void
  closeAll: () => void
}

export function createH1Server (opts: H1ConnectionOptions, handlers: H1Handlers): H1Server {
  const live = new Set<H1Connection>()
  // A connection handed over (Upgrade, CONNECT) is no longer this server's.
  const own: H1Handlers = {
    request: handlers.request,
    upgrade: (req, socket, head) => { forget(socket); handlers.upgrade(req, socket, head) },
    connect: (req, socket, head) => { forget(socket); handlers.connect(req, socket, head) },
    clientError: handlers.clientError,
    ...(handlers.sendTimeout === undefined ? {} : { sendTimeout: handlers.sendTimeout }),
    ...(handlers.dropped === undefined ? {} : { dropped: handlers.dropped })
  }
  const bySocket = new WeakMap<Socket, H1Connection>()
  const forget = (socket: Socket): void => { const c = bySocket.get(socket); if (c !== undefined) live.delete(c) }

  // node:http's own sweep: the deadlines are checked this often (a quarter of the shortest deadline,
  // between 50 ms and 1 s), so a slowloris or a caller that stops reading is cut off close to it.
  let sweep: NodeJS.Timeout | undefined
  const deadlines = [opts.headersTimeoutMs, opts.requestTimeoutMs, opts.sendTimeoutMs].filter(ms => ms > 0)
  if (deadlines.length > 0) {
    sweep = setInterval(() => {
      const now = performance.now()
      for (const conn of live) conn.checkDeadlines(now)
    }, sweepInterval(deadlines))
    sweep.unref()
  }

  return {
    accept (socket) {
      const conn = new H1Connection(socket, own, opts)
      live.add(conn)
      bySocket.set(socket, conn)
      socket.once('close', () => { live.delete(conn) })
      return conn
    },
    closeIdle () { for (const conn of live) conn.closeIfIdle() },
    closeAll () {
      clearInterval(sweep)
      for (const conn of live) conn.socket.destroy()
    }
  }
}
