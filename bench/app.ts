// The app behind the sidecar in benchmarks: answers every request with a small JSON body.
import { createServer } from 'node:http'
const port = Number(process.argv[2] ?? 0)
const body = JSON.stringify({ ok: true })
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }); res.end(body) })
})
server.keepAliveTimeout = 60_000
server.listen(port, '127.0.0.1', () => { process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`) })
process.on('SIGTERM', () => { server.close(); server.closeAllConnections() })
