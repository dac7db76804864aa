import { AppConnection, AppConnectionError, Exchange, type AppExchangeHandler, type ConnectionOwner } from './app-h1-connection.ts'
import type { AppRequest } from './app-h1-request.ts'
import type { Socket } from 'node:net'

// Kept-alive HTTP/1.1 connections to the app on localhost (app-h1-connection.ts: raw sockets, Node's
// own llhttp binding reading the responses; app-h1-request.ts: the request head and its framing).
// Issue 21 measured the app side as the dearer half of a Node proxy: node:https in front of raw
// sockets and llhttp cost 0.76 CPU s per 10k requests where node:https in front of node:http's client
// cost 1.38 (same run, bench/README.md), and undici's Pool sat between the two. What undici gave us is
// kept: request bodies re-framed, hop-by-hop headers never sent, a deadline for the response head
// (504), connect failures and resets as errors (502), a stale kept-alive connection retried once for
// a safe bodiless request, no pipelining.

export { AppConnectionError, type AppExchangeHandler } from './app-h1-connection.ts'
export type { AppRequest } from './app-h1-request.ts'

export interface AppPoolOptions {
  /** Time allowed for the app to start answering (response headers). */
  responseTimeoutMs: number
  connectTimeoutMs: number
  /** At most this many connections; further requests wait for one. */
  connections?: number
  /**
   * An idle connection is closed after this long: below the keep-alive timeout of common app servers
   * (Node 5 s), so the app rarely closes one as we send on it (that race is retried once).
   */
  keepAliveMs?: number
  /**
   * Opens a connection (the outbound pool to another sidecar: mTLS, its SPIFFE ID verified before
   * `done`); without it, plain TCP to host:port. An error fails the exchange that asked for it.
   */
  connect?: (done: (err: Error | null, socket?: Socket) => void) => void
}

/** Connections to one app (host:port), at most `connections` of them, idle ones reused most-recent first. */
export class AppH1Pool implements ConnectionOwner {
  readonly host: string
  readonly port: number
  readonly authority: string
  readonly responseTimeoutMs: number
  readonly connectTimeoutMs: number
  private readonly connections: number
  private readonly keepAliveMs: number
  private readonly free: AppConnection[] = []
  private readonly waiting: Exchange[] = []
  private open = 0
  private closing = false
  /** Retired (our SVID rotated, the routes changed): no connection is kept or reused once nothing waits for one. */
  private retiring = false
  private readonly connect: AppPoolOptions['connect']
  private readonly sweeper: NodeJS.Timeout

  constructor (upstream: { host: string, port: number }, o: AppPoolOptions) {
    this.host = upstream.host
    this.port = upstream.port
    this.authority = `${upstream.host.includes(':') ? `[${upstream.host}]` : upstream.host}:${upstream.port}`
    this.responseTimeoutMs = o.responseTimeoutMs
    this.connectTimeoutMs = o.connectTimeoutMs
    this.connections = o.connections ?? 512
    this.keepAliveMs = o.keepAliveMs ?? 4000
    this.connect = o.connect
    // One sweep a second closes connections idle for longer than keepAliveMs (not a timer per connection).
    this.sweeper = setInterval(() => { this.sweep() }, Math.min(1000, this.keepAliveMs))
    this.sweeper.unref()
  }

  /** Sends `req` to the app; `handler` hears how it goes. */
  dispatch (req: AppRequest, handler: AppExchangeHandler): void {
    this.dispatchExchange(new Exchange(req, handler))
  }

  dispatchExchange (x: Exchange): void {
    if (this.closing) { x.done = true; x.handler.onError(new AppConnectionError('POOL_CLOSED', 'the sidecar is shutting down')); return }
    let c = this.free.pop()
    while (c !== undefined && !c.usable) c = this.free.pop()
    if (c === undefined) {
      if (this.open >= this.connections) { this.waiting.push(x); return }
      this.open++
      if (this.connect !== undefined) { this.connectThen(x, this.connect); return }
      c = new AppConnection(this)
    }
    c.start(x)
  }

  private connectThen (x: Exchange, connect: NonNullable<AppPoolOptions['connect']>): void {
    const failed = (err: AppConnectionError): void => {
      this.open--
      x.done = true
      x.handler.onError(err)
      this.slotFreed()
    }
    connect((err, socket) => {
      if (err !== null || socket === undefined) {
        const e = (err ?? new Error('no socket')) as Error & { code?: string }
        failed(new AppConnectionError(e.code ?? 'ECONNREFUSED', e.message, false, e))
        return
      }
      if (this.closing) { socket.destroy(); failed(new AppConnectionError('POOL_CLOSED', 'the sidecar is shutting down')); return }
      new AppConnection(this, socket).start(x)
    })
  }

  idle (c: AppConnection): void {
    if (this.closing) { c.destroy(); return }
    const next = this.waiting.shift()
    if (next !== undefined) { c.start(next); return }
    if (this.retiring) { c.destroy(); return }
    c.idleSince = performance.now()
    this.free.push(c)
  }

  /** No new connections are wanted from this pool: the idle ones close now, the busy ones after the exchanges still queued. */
  retire (): void {
    this.retiring = true
    for (const c of this.free.splice(0)) c.destroy()
    if (this.open === 0) clearInterval(this.sweeper)
  }

  gone (c: AppConnection): void {
    this.open--
    const i = this.free.indexOf(c)
    if (i !== -1) this.free.splice(i, 1)
    this.slotFreed()
  }

  /** A connection (or one being made) is gone: the next waiting exchange gets a new one; a retired pool with none left stops its sweep. */
  private slotFreed (): void {
    const next = this.waiting.shift()
    if (next !== undefined) this.dispatchExchange(next)
    else if (this.retiring && this.open === 0) clearInterval(this.sweeper)
  }

  private sweep (): void {
    const limit = performance.now() - this.keepAliveMs
    // Oldest first: the stack's bottom has been idle longest.
    while (this.free.length > 0 && this.free[0]!.idleSince < limit) this.free.shift()!.destroy()
  }

  /** Connections open now (busy and idle). */
  get size (): number { return this.open }

  /** Closes idle connections now; busy ones close as their exchange ends. */
  async close (): Promise<void> {
    this.closing = true
    clearInterval(this.sweeper)
    for (const x of this.waiting.splice(0)) { x.done = true; x.handler.onError(new AppConnectionError('POOL_CLOSED', 'the sidecar is shutting down')) }
    for (const c of this.free.splice(0)) c.destroy()
  }
}
