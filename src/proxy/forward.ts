import { request, Agent, type IncomingMessage, type ServerResponse, type OutgoingHttpHeaders, type IncomingHttpHeaders } from 'node:http'
import type { Duplex } from 'node:stream'

// Forwarding to the app on localhost: bodies stream both ways (nothing is buffered), one keep-alive
// agent reuses connections, hop-by-hop headers are dropped in both directions (RFC 9110 7.6.1), and
// failures become a typed outcome: app down -> 502, app too slow -> 504, never a hang.

export interface Upstream { host: string, port: number }

export interface ForwardOptions {
  upstream: Upstream
  agent: Agent
  /** Time allowed for the app to start answering (response headers). */
  responseTimeoutMs: number
  connectTimeoutMs: number
}

export type ForwardOutcome =
  | { kind: 'response', status: number }
  | { kind: 'upgraded', status: 101 }
  | { kind: 'upstream-unavailable', status: 502, error: string }
  | { kind: 'upstream-timeout', status: 504, error: string }
  | { kind: 'upstream-reset', status: number, error: string }
  | { kind: 'client-gone', status: number }

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate'])

/** Copies end-to-end headers: drops the fixed hop-by-hop set and any header named in Connection. */
export function endToEndHeaders (headers: IncomingHttpHeaders, drop: readonly string[] = []): OutgoingHttpHeaders {
  const listed = new Set(String(headers.connection ?? '').toLowerCase().split(',').map(s => s.trim()).filter(s => s !== ''))
  const out: OutgoingHttpHeaders = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name) || drop.includes(name)) continue
    out[name] = value
  }
  return out
}

export function createUpstreamAgent (maxSockets = 512): Agent {
  // LIFO keeps a few hot connections instead of cycling through (and timing out) many.
  return new Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets, maxFreeSockets: 64, scheduling: 'lifo' })
}

const IDEMPOTENT_NO_BODY = new Set(['GET', 'HEAD', 'OPTIONS'])
const hasBody = (req: IncomingMessage): boolean => req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0

/** Streams `req` to the app as `target` with `headers`, and the answer back to `res`. */
export function forwardRequest (req: IncomingMessage, res: ServerResponse, target: string, headers: OutgoingHttpHeaders, opts: ForwardOptions, done: (o: ForwardOutcome) => void): void {
  let finished = false
  const finish = (o: ForwardOutcome): void => { if (!finished) { finished = true; done(o) } }
  // Transfer-Encoding is hop-by-hop (endToEndHeaders drops it), so a chunked body must be framed again
  // explicitly: Node does not chunk GET, HEAD, DELETE, OPTIONS, TRACE or CONNECT by default and would
  // write their body unframed onto the app connection, where the app reads it as another request.
  if (req.headers['transfer-encoding'] !== undefined) headers = { ...headers, 'transfer-encoding': 'chunked' }
  const attempt = (retry: boolean): void => {
    const up = request({ host: opts.upstream.host, port: opts.upstream.port, method: req.method, path: target, headers, agent: opts.agent })
    let answered = false
    const headerTimer = setTimeout(() => {
      up.destroy(Object.assign(new Error(`app did not answer within ${opts.responseTimeoutMs} ms`), { code: 'GH_UPSTREAM_TIMEOUT' }))
    }, opts.responseTimeoutMs)
    up.on('socket', (s) => {
      if (s.connecting) {
        const ct = setTimeout(() => { up.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })) }, opts.connectTimeoutMs)
        s.once('connect', () => { clearTimeout(ct) })
        s.once('close', () => { clearTimeout(ct) })
      }
    })
    up.on('response', (upRes) => {
      answered = true
      clearTimeout(headerTimer)
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, endToEndHeaders(upRes.headers))
      upRes.pipe(res)
      upRes.on('error', () => { res.destroy() })
      upRes.on('end', () => { finish({ kind: 'response', status: upRes.statusCode ?? 502 }) })
      res.on('close', () => { if (!res.writableFinished) { upRes.destroy(); finish({ kind: 'client-gone', status: upRes.statusCode ?? 499 }) } })
    })
    up.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(headerTimer)
      if (answered) { res.destroy(); finish({ kind: 'upstream-reset', status: res.statusCode, error: err.code ?? err.message }); return }
      // A keep-alive connection the app closed just as we reused it: safe to retry once if nothing was sent.
      if (retry && up.reusedSocket && err.code === 'ECONNRESET' && IDEMPOTENT_NO_BODY.has(req.method ?? '') && !hasBody(req) && req.readableEnded) { attempt(false); return }
      if (err.code === 'GH_UPSTREAM_TIMEOUT') finish({ kind: 'upstream-timeout', status: 504, error: err.message })
      else finish({ kind: 'upstream-unavailable', status: 502, error: err.code ?? err.message })
    })
    req.on('aborted', () => { up.destroy() })
    if (retry) req.pipe(up)
    else up.end()
  }
  res.on('close', () => { if (!finished && !res.writableFinished) finish({ kind: 'client-gone', status: 499 }) })
  attempt(true)
}

/** WebSocket and other Upgrade requests, after authorization: relay the 101 and then raw bytes. */
export function forwardUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer, target: string, headers: OutgoingHttpHeaders, opts: ForwardOptions, done: (o: ForwardOutcome) => void): void {
  const upgradeHeaders = { ...headers, connection: 'Upgrade', upgrade: req.headers.upgrade ?? '' }
  const up = request({ host: opts.upstream.host, port: opts.upstream.port, method: req.method, path: target, headers: upgradeHeaders, timeout: opts.connectTimeoutMs })
  up.on('timeout', () => { up.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })) })
  const timer = setTimeout(() => { up.destroy(Object.assign(new Error('upgrade timeout'), { code: 'GH_UPSTREAM_TIMEOUT' })) }, opts.responseTimeoutMs)
  up.on('upgrade', (upRes, upSocket, upHead) => {
    clearTimeout(timer)
    up.setTimeout(0)
    // The 101 must keep Connection: upgrade and Upgrade; any other hop-by-hop header stays behind.
    const lines = [`HTTP/1.1 101 ${upRes.statusMessage ?? 'Switching Protocols'}`, 'connection: upgrade', `upgrade: ${String(upRes.headers.upgrade ?? '')}`]
    for (const [k, v] of Object.entries(endToEndHeaders(upRes.headers))) for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${String(one)}`)
    socket.write(`${lines.join('\r\n')}\r\n\r\n`)
    if (upHead.length > 0) socket.write(upHead)
    if (head.length > 0) upSocket.write(head)
    upSocket.pipe(socket).pipe(upSocket)
    const close = (): void => { upSocket.destroy(); socket.destroy() }
    upSocket.on('error', close)
    socket.on('error', close)
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
