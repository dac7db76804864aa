import type { Socket } from 'node:net'
import { sweepInterval } from './send-deadline.ts'
import { H1Connection } from './h1-server-connection.ts'
import type { H1Request } from './h1-server-request.ts'
import type { H1Response } from './h1-server-response.ts'

// Gatehouse's own HTTP/1.1 server on Node's llhttp binding, for every listener: the inbound one (TLS,
// inbound-h1.ts), the outbound one and each http route's (the app's plain HTTP, outbound.ts). It keeps the live
// connections (h1-server-connection.ts), checks their headers and request deadlines, and closes them
// on shutdown: what node:http's server did, without an IncomingMessage and a ServerResponse per
// request (issue 21).

/** What the protocol stage does with what this connection reads (node:http's server events). */
export interface H1Handlers {
  request: (req: H1Request, res: H1Response, conn: H1Connection) => void
  /** Upgrade (or CONNECT): the socket is the handler's from here on; `head` is what followed the request head. */
  upgrade: (req: H1Request, socket: Socket, head: Buffer) => void
  connect: (req: H1Request, socket: Socket, head: Buffer) => void
  /** A request read but never handed over or answered: the connection is closed for it (the stage still records it). */
  dropped?: (req: H1Request, why: string) => void
  /** The caller took none of an answer's `waiting` bytes within the send deadline: the connection is closed after this. */
  sendTimeout?: (socket: Socket, waiting: number) => void
  /** Bytes that are not HTTP/1.1 (`bytesParsed` set), or a deadline passed (code ERR_HTTP_REQUEST_TIMEOUT). */
  clientError: (err: { code: string, bytesParsed?: number }, socket: Socket) => void
}

/** The limits and deadlines of every connection of one server. */
export interface H1ServerOptions {
  maxHeaderSize: number
  /** From the start of a request (or of the connection) until its head is complete. */
  headersTimeoutMs: number
  /** From the start of a request until all of it, body included, is read. */
  requestTimeoutMs: number
  /** A kept-alive connection with no request for this long is closed. */
  idleTimeoutMs: number
  /** A caller that takes none of an answer's bytes for this long is disconnected (send-deadline.ts); 0: no deadline. */
  sendTimeoutMs: number
}

export interface H1Server {
  /** Reads HTTP/1.1 from `socket` from now on (a verified TLS connection, or a plain one). */
  accept: (socket: Socket) => H1Connection
  /** Shutdown: idle connections close now, the others after the answer in progress. */
  closeIdle: () => void
  closeAll: () => void
}

export function createH1Server (opts: H1ServerOptions, handlers: H1Handlers): H1Server {
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
  // between 50 ms and 1 s), so a slowloris or a caller that stops reading is cut off close to it,
  // and a connection idle past its keep-alive deadline is closed.
  let sweep: NodeJS.Timeout | undefined
  const deadlines = [opts.headersTimeoutMs, opts.requestTimeoutMs, opts.sendTimeoutMs, opts.idleTimeoutMs].filter(ms => ms > 0)
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
