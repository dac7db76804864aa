// lean-reference: what an mTLS-terminating HTTP/1.1 proxy costs on Node 24 without node:http's
// IncomingMessage/ServerResponse streams (issue 21: is a leaner server path worth building?). The
// same TLS as node-reference (node:tls, requestCert, OpenSSL verifies the chain), then Node's own
// llhttp binding (the HTTPParser node:http uses) on each side: the request head is parsed on the TLS
// socket, written to a kept-alive plain socket to the app, and the app's response parsed there and
// written back. An experiment, not a product: content-length or no body only, no pipelining, no
// policy, no log. It bounds what a lean path could save; `bench/README.md` reports it beside node-reference.
//   node bench/lean-reference.ts --port P --upstream-port A --cert F --key F --ca F
// Prints {"port":N} on stdout once listening.
import { createServer, type TLSSocket } from 'node:tls'
import { connect, type Socket } from 'node:net'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

interface Parser {
  initialize: (type: number, resource: object, maxHeaderSize?: number, lenient?: number) => void
  execute: (data: Buffer) => number | Error
  [key: number]: unknown
}
const { HTTPParser, methods } = createRequire(import.meta.url)('_http_common') as { methods: string[], HTTPParser: (new () => Parser) & { REQUEST: number, RESPONSE: number, kOnHeadersComplete: number, kOnBody: number, kOnMessageComplete: number } }

const arg = (name: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  if (i === -1 || process.argv[i + 1] === undefined) throw new Error(`--${name} is required`)
  return process.argv[i + 1]!
}
const upstreamPort = Number(arg('upstream-port'))
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'transfer-encoding'])

/** Raw header list [name, value, ...] to header lines, hop-by-hop ones dropped. */
function headLines (raw: string[]): string {
  let out = ''
  for (let i = 0; i < raw.length; i += 2) {
    if (HOP.has(raw[i]!.toLowerCase())) continue
    out += `${raw[i]!}: ${raw[i + 1]!}\r\n`
  }
  return out
}

/** A kept-alive connection to the app with its response parser; `client` is where the answer goes. */
class AppConn {
  readonly socket: Socket
  private readonly parser = new HTTPParser()
  client: TLSSocket | undefined
  constructor () {
    this.socket = connect(upstreamPort, '127.0.0.1')
    this.socket.setNoDelay(true)
    this.parser.initialize(HTTPParser.RESPONSE, {})
    this.parser[HTTPParser.kOnHeadersComplete] = (_maj: number, _min: number, raw: string[], _m: unknown, _u: unknown, status: number, msg: string) => {
      // One TLS record and one write for the head and the body, as node:http does (uncorked at the end).
      this.client?.cork()
      this.client?.write(`HTTP/1.1 ${status} ${msg}\r\n${headLines(raw)}\r\n`)
      return 0
    }
    this.parser[HTTPParser.kOnBody] = (b: Buffer) => { this.client?.write(b) }
    this.parser[HTTPParser.kOnMessageComplete] = () => { this.client?.uncork(); this.client = undefined; idle.push(this) }
    this.socket.on('data', (d: Buffer) => { this.parser.execute(d) })
    this.socket.on('error', () => {})
  }
}
const idle: AppConn[] = []

const server = createServer({
  cert: readFileSync(arg('cert')),
  key: readFileSync(arg('key')),
  ca: readFileSync(arg('ca')),
  requestCert: true,
  rejectUnauthorized: true,
  minVersion: 'TLSv1.3'
}, (socket: TLSSocket) => {
  const parser = new HTTPParser()
  parser.initialize(HTTPParser.REQUEST, {})
  let app: AppConn | undefined
  parser[HTTPParser.kOnHeadersComplete] = (_maj: number, _min: number, raw: string[], method: number, url: string) => {
    app = idle.pop() ?? new AppConn()
    app.client = socket
    app.socket.write(`${methods[method]!} ${url} HTTP/1.1\r\n${headLines(raw)}\r\n`)
    return 0
  }
  parser[HTTPParser.kOnBody] = (b: Buffer) => { app?.socket.write(b) }
  parser[HTTPParser.kOnMessageComplete] = () => { app = undefined }
  socket.on('data', (d: Buffer) => { parser.execute(d) })
  socket.on('error', () => { socket.destroy() })
})
server.listen(Number(arg('port')), '127.0.0.1', () => { process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`) })
process.on('SIGTERM', () => { server.close(); process.exit(0) })
