// One forwarding front for bench/forward.ts: `node forward-front.ts <kind> <appPort>`.
import { createServer } from 'node:http'
import httpProxy from 'http-proxy'
import { Pool } from 'undici'
import { Agent, request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerResponse } from 'node:http'
import { createUpstreamPool, forwardH1 } from '../src/proxy/forward-h1.ts'
import { endToEndHeaders, hasBody } from '../src/proxy/headers.ts'
import type { ResponseSink } from '../src/proxy/exchange.ts'

/** node:http's ServerResponse as the forwarder's sink: the forwarding step measured alone, on the same front as the other kinds. */
const h1Sink = (res: ServerResponse): ResponseSink => ({
  get headersSent () { return res.headersSent },
  get statusCode () { return res.statusCode },
  head (status: number, headers: OutgoingHttpHeaders, opts: { end: boolean }) { res.writeHead(status, headers); if (opts.end) res.end() },
  write: (chunk: Buffer) => res.write(chunk),
  end () { res.end() },
  onDrain (fn: () => void) { res.on('drain', fn) },
  trailers (t: OutgoingHttpHeaders) { res.addTrailers(t as Record<string, string>) },
  destroy () { res.destroy() },
  onAbort (fn: () => void) { res.on('close', () => { if (!res.writableFinished) fn() }) }
})

const [kind, appPortText] = process.argv.slice(2)
const appPort = Number(appPortText)
let handler: Parameters<typeof createServer>[1]
if (kind === 'http-proxy') {
  const proxy = httpProxy.createProxyServer({ target: `http://127.0.0.1:${appPort}`, agent: new Agent({ keepAlive: true, maxSockets: 512 }), xfwd: false })
  proxy.on('error', (_err, _req, res) => { (res as import('node:http').ServerResponse).writeHead(502).end() })
  handler = (req, res) => { proxy.web(req, res) }
} else if (kind === 'gatehouse-forward') {
  const upstream = { host: '127.0.0.1', port: appPort }
  const opts = { upstream, pool: createUpstreamPool(upstream, { responseTimeoutMs: 30_000, connectTimeoutMs: 2000 }), responseTimeoutMs: 30_000, connectTimeoutMs: 2000 }
  handler = (req, res) => { forwardH1({ method: req.method ?? 'GET', target: req.url ?? '/', headers: endToEndHeaders(req.headers), body: hasBody(req.headers) ? req : null }, h1Sink(res), opts, () => {}) }
} else if (kind === 'node-http') {
  // node:http client with a keep-alive Agent, piping both ways (what bench/node-reference.ts does).
  const agent = new Agent({ keepAlive: true, maxSockets: 512 })
  handler = (req, res) => {
    const up = httpRequest({ host: '127.0.0.1', port: appPort, method: req.method, path: req.url, headers: endToEndHeaders(req.headers), agent }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, endToEndHeaders(upRes.headers as IncomingHttpHeaders))
      upRes.pipe(res)
    })
    up.on('error', () => { if (!res.headersSent) res.writeHead(502); res.end() })
    req.pipe(up)
  }
} else {
  const pool = new Pool(`http://127.0.0.1:${appPort}`, { connections: 64, pipelining: 1 })
  handler = (req, res) => {
    const headers = endToEndHeaders(req.headers) as Record<string, string>
    pool.request({ path: req.url ?? '/', method: req.method as 'GET', headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req }).then((up) => {
      res.writeHead(up.statusCode, endToEndHeaders(up.headers as import('node:http').IncomingHttpHeaders))
      up.body.pipe(res)
    }, () => { res.writeHead(502).end() })
  }
}
const server = createServer(handler)
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`) })
