// node-reference: the smallest honest mTLS-terminating proxy on Node 24, the ceiling for anything
// written in Node. node:https with requestCert (OpenSSL verifies the client chain against the CA
// bundle), node:http with a keep-alive agent to the app, hop-by-hop headers dropped. No policy, no
// logging, no metrics.
//   node bench/node-reference.ts --port P --upstream-port A --cert F --key F --ca F
// Prints {"port":N} on stdout once listening.
import { createServer } from 'node:https'
import { request, Agent, type IncomingHttpHeaders } from 'node:http'
import { readFileSync } from 'node:fs'

const arg = (name: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  if (i === -1 || process.argv[i + 1] === undefined) throw new Error(`--${name} is required`)
  return process.argv[i + 1]!
}
const upstreamPort = Number(arg('upstream-port'))
const agent = new Agent({ keepAlive: true, maxSockets: 256 })
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade'])
const endToEnd = (h: IncomingHttpHeaders): IncomingHttpHeaders => {
  const out: IncomingHttpHeaders = {}
  for (const k in h) if (!HOP.has(k)) out[k] = h[k]
  return out
}

const server = createServer({
  cert: readFileSync(arg('cert')),
  key: readFileSync(arg('key')),
  ca: readFileSync(arg('ca')),
  requestCert: true,
  rejectUnauthorized: true,
  minVersion: 'TLSv1.3'
}, (req, res) => {
  const up = request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: endToEnd(req.headers), agent }, (upRes) => {
    res.writeHead(upRes.statusCode ?? 502, endToEnd(upRes.headers))
    upRes.pipe(res)
  })
  up.on('error', () => { if (!res.headersSent) res.writeHead(502); res.end() })
  req.pipe(up)
})
server.keepAliveTimeout = 60_000
server.listen(Number(arg('port')), '127.0.0.1', () => { process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`) })
process.on('SIGTERM', () => { server.close(); server.closeAllConnections() })
