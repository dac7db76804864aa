// The app behind the sidecar in benchmarks: answers every request with a fixed body.
//   node bench/app.ts [PORT] [--size BYTES]
// Without --size the body is a small JSON document; with it, a JSON document of exactly BYTES bytes
// (bench/run.ts uses 1024). Prints {"port":N} on stdout once listening.
import { createServer } from 'node:http'

const args = process.argv.slice(2)
const sizeAt = args.indexOf('--size')
const size = sizeAt === -1 ? undefined : Number(args[sizeAt + 1])
const port = Number(args.find((a, i) => !a.startsWith('--') && i !== sizeAt + 1) ?? 0)

function bodyOf (bytes: number | undefined): Buffer {
  const small = JSON.stringify({ ok: true })
  if (bytes === undefined || bytes <= small.length + 12) return Buffer.from(small)
  const head = '{"ok":true,"pad":"'
  return Buffer.from(`${head}${'x'.repeat(bytes - head.length - 2)}"}`)
}
const body = bodyOf(size)
const headers = { 'content-type': 'application/json', 'content-length': String(body.length) }

const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => { res.writeHead(200, headers); res.end(body) })
})
server.keepAliveTimeout = 60_000
server.listen(port, '127.0.0.1', () => { process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port, bodyBytes: body.length })}\n`) })
process.on('SIGTERM', () => { server.close(); server.closeAllConnections() })
