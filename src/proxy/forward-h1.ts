import { request, type OutgoingHttpHeaders } from 'node:http'
import type { Duplex } from 'node:stream'
import { protocolName } from './upgrade.ts'
import { endToEndHeaders, endToEndRawHeaders } from './headers.ts'
import { AppH1Pool, type AppConnectionError, type AppExchangeHandler } from './app-h1-pool.ts'
import type { ForwardOutcome, ForwardRequest, ResponseSink } from './exchange.ts'

// Forwarding to the app on localhost over HTTP/1.1: bodies stream both ways (nothing is buffered), one keep-alive
// pool reuses connections, hop-by-hop headers are dropped in both directions (RFC 9110 7.6.1), and
// failures become a typed outcome: app down -> 502, app too slow -> 504, never a hang.

export interface Upstream { host: string, port: number }

export interface ForwardOptions {
  upstream: Upstream
  /** Keep-alive connections to the app (app-h1-pool.ts says why not undici's Pool). */
  pool: AppH1Pool
  /** Time allowed for the app to start answering (response headers). */
  responseTimeoutMs: number
  connectTimeoutMs: number
}

export function createUpstreamPool (upstream: Upstream, opts: { responseTimeoutMs: number, connectTimeoutMs: number, connections?: number }): AppH1Pool {
  return new AppH1Pool(upstream, { responseTimeoutMs: opts.responseTimeoutMs, connectTimeoutMs: opts.connectTimeoutMs, ...(opts.connections === undefined ? {} : { connections: opts.connections }) })
}

/**
 * One request to the app: this object is the whole per-request state (no stream wrapper,
 * AsyncResource, AbortController or closures per request: issue 21), and the answer goes straight
 * into the sink, the app's socket paused while the caller's side is full.
 */
class AppExchange implements AppExchangeHandler {
  private abort: (() => void) | undefined
  private finished = false
  private clientGone = false
  private readonly sink: ResponseSink
  private readonly done: (o: ForwardOutcome) => void
  constructor (sink: ResponseSink, done: (o: ForwardOutcome) => void) {
    this.sink = sink
    this.done = done
    sink.onAbort(() => {
      if (this.finished) return
      this.clientGone = true
      this.abort?.()
      this.finish({ kind: 'client-gone', status: sink.headersSent ? sink.statusCode : 499 })
    })
  }

  private finish (o: ForwardOutcome): void { if (!this.finished) { this.finished = true; this.done(o) } }

  onStart (abort: () => void): void {
    if (this.clientGone) abort()
    else this.abort = abort
  }

  onHeaders (statusCode: number, rawHeaders: string[], resume: () => void): void {
    this.sink.head(statusCode, endToEndRawHeaders(rawHeaders), { end: false, trailers: false })
    this.sink.onDrain(resume)
  }

  onData (chunk: Buffer): boolean { return this.sink.write(chunk) }

  onComplete (): void {
    if (this.sink.headersSent) this.sink.end()
    this.finish({ kind: 'response', status: this.sink.statusCode })
  }

  onError (err: AppConnectionError): void {
    const sink = this.sink
    if (this.clientGone) { this.finish({ kind: 'client-gone', status: sink.headersSent ? sink.statusCode : 499 }); return }
    if (sink.headersSent) { sink.destroy(); this.finish({ kind: 'upstream-reset', status: sink.statusCode, error: err.code }); return }
    if (err.timeout) this.finish({ kind: 'upstream-timeout', status: 504, error: err.message })
    else this.finish({ kind: 'upstream-unavailable', status: 502, error: err.code, ...(err.cause instanceof Error ? { cause: err.cause } : {}) })
  }
}

/**
 * Streams the request to the app and the answer back into `sink`. A body is re-framed by the pool
 * (content-length kept, otherwise chunked), whatever the method, so a chunked GET body can never
 * reach the app unframed and be read as a second request.
 */
export function forwardH1 (fr: ForwardRequest, sink: ResponseSink, opts: Pick<ForwardOptions, 'pool'>, done: (o: ForwardOutcome) => void): void {
  opts.pool.dispatch({ path: fr.target, method: fr.method, headers: fr.headers, body: fr.body }, new AppExchange(sink, done))
}

/**
 * WebSocket and other Upgrade requests, after authorization: relay the 101 and then raw bytes.
 * `headers.upgrade` holds only the protocols that may be relayed (`offered`); an app that switches to
 * anything else is cut off before a byte of the new protocol reaches the caller.
 */
export function forwardUpgrade (method: string, socket: Duplex, head: Buffer, target: string, headers: OutgoingHttpHeaders, offered: readonly string[], opts: ForwardOptions, done: (o: ForwardOutcome) => void): void {
  const upgradeHeaders = { ...headers, connection: 'Upgrade' }
  const up = request({ host: opts.upstream.host, port: opts.upstream.port, method, path: target, headers: upgradeHeaders, timeout: opts.connectTimeoutMs })
  up.on('timeout', () => { up.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })) })
  const timer = setTimeout(() => { up.destroy(Object.assign(new Error('upgrade timeout'), { code: 'GH_UPSTREAM_TIMEOUT' })) }, opts.responseTimeoutMs)
  up.on('upgrade', (upRes, upSocket, upHead) => {
    clearTimeout(timer)
    up.setTimeout(0)
    const chosen = String(upRes.headers.upgrade ?? '').trim().toLowerCase()
    if (!offered.some(p => p === chosen || protocolName(p) === protocolName(chosen))) {
      upSocket.destroy()
      socket.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
      done({ kind: 'upstream-unavailable', status: 502, error: `the app switched to ${JSON.stringify(chosen)}, which was not offered` })
      return
    }
    // The 101 must keep Connection: upgrade and Upgrade; any other hop-by-hop header stays behind.
    const lines = [`HTTP/1.1 101 ${upRes.statusMessage ?? 'Switching Protocols'}`, 'connection: upgrade', `upgrade: ${String(upRes.headers.upgrade ?? '')}`]
    for (const [k, v] of Object.entries(endToEndHeaders(upRes.headers))) for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${String(one)}`)
    socket.write(`${lines.join('\r\n')}\r\n\r\n`)
    if (upHead.length > 0) socket.write(upHead)
    if (head.length > 0) upSocket.write(head)
    upSocket.pipe(socket).pipe(upSocket)
    const close = (): void => { upSocket.destroy(); socket.destroy() }
    // Either side gone (error or close) ends the tunnel: a half-open relay would hold the app's socket.
    upSocket.on('error', close)
    socket.on('error', close)
    upSocket.on('close', close)
    socket.on('close', close)
    done({ kind: 'upgraded', status: 101 })
  })
  up.on('response', (upRes) => {
    // The app declined the upgrade: relay its plain answer and close.
    clearTimeout(timer)
    const lines = [`HTTP/1.1 ${upRes.statusCode ?? 502} ${upRes.statusMessage ?? ''}`]
    const hdrs = endToEndHeaders(upRes.headers)
    for (const [k, v] of Object.entries(hdrs)) for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${String(one)}`)
    lines.push('connection: close')
    socket.write(`${lines.join('\r\n')}\r\n\r\n`)
    upRes.pipe(socket)
    done({ kind: 'response', status: upRes.statusCode ?? 502 })
  })
  up.on('error', (err: NodeJS.ErrnoException) => {
    clearTimeout(timer)
    const timeout = err.code === 'GH_UPSTREAM_TIMEOUT'
    const status = timeout ? 504 : 502
    socket.end(`HTTP/1.1 ${status} ${timeout ? 'Gateway Timeout' : 'Bad Gateway'}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`)
    done(timeout ? { kind: 'upstream-timeout', status: 504, error: err.message } : { kind: 'upstream-unavailable', status: 502, error: err.code ?? err.message })
  })
  up.end()
}
