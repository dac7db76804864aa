import t from 'tap'
import { once } from 'node:events'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { createHash, X509Certificate } from 'node:crypto'
import { ProxyAgent, request as undiciRequest } from 'undici'
import { Pki, startApp, startWorkload } from './helpers/mesh.ts'
import { CALLER_ID, CALLEE_ID, TD, routesYaml, startEchoServer, viaProxy, json, openTcp, readAll } from './helpers/outbound-mesh.ts'
import { waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// CONNECT opens an opaque tunnel, which would let the app bypass routes and mTLS: the outbound listener
// refuses it (403 GH_OUTBOUND_CONNECT_REFUSED) except to host:ports listed in allowConnect (a plain TCP
// tunnel) or routed (the tunnel is read by the sidecar's own HTTP server, so what travels in it is
// routed and mTLS'd like any call). It survives clients that reset right after asking, and refuses
// https:// targets (the sidecar adds the TLS).

const dir = tempDir(t, 'gh-outbound-connect-')
const pki = new Pki(dir, TD)
const bApp = await startApp(t)
const b = await startWorkload(t, { pki, name: 'b', id: CALLEE_ID, upstreamPort: bApp.port, allow: [CALLER_ID] })
const echo = await startEchoServer(t)
const a = await startWorkload(t, {
  pki,
  name: 'a',
  id: CALLER_ID,
  routes: routesYaml([{ host: 'b.internal', address: b.inboundAddress, id: CALLEE_ID }]),
  allowConnect: [echo.address]
})
const proxy = a.outboundPort

interface Connected { status: number, socket: Socket, head: Buffer, res: IncomingMessage }

/** Sends CONNECT `target` to the outbound listener; resolves on the response, whatever its status. */
async function connectVia (target: string): Promise<Connected> {
  return await new Promise<Connected>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: proxy, method: 'CONNECT', path: target, headers: { host: target }, agent: false })
    const timer = setTimeout(() => { req.destroy(new Error('no answer to CONNECT')) }, 10_000)
    req.on('error', (err) => { clearTimeout(timer); reject(err) })
    req.on('connect', (res: IncomingMessage, socket: Socket, head: Buffer) => {
      clearTimeout(timer)
      socket.on('error', () => {})
      resolve({ status: res.statusCode ?? 0, socket, head, res })
    })
    req.end()
  })
}

/** True once `text` holds a whole HTTP/1.1 response (content-length or chunked body). */
function complete (text: string): boolean {
  const end = text.indexOf('\r\n\r\n')
  if (end === -1) return false
  const head = text.slice(0, end).toLowerCase()
  const length = /\r\ncontent-length: *(\d+)/.exec(head)
  if (length !== null) return Buffer.byteLength(text.slice(end + 4)) >= Number(length[1])
  return /\r\ntransfer-encoding: *chunked/.test(head) ? text.endsWith('\r\n0\r\n\r\n') : true
}

async function healthz (): Promise<number> {
  const res = await fetch(`${a.adminUrl}/healthz`)
  await res.arrayBuffer()
  return res.status
}

t.test('CONNECT to an unlisted host:port is refused with 403 GH_OUTBOUND_CONNECT_REFUSED; nothing is dialled', async t => {
  // b.inboundAddress is where b.internal's route points, but only the name b.internal is routed.
  const targets = ['unknown.internal:443', 'unknown.internal:80', b.inboundAddress, `localhost:${echo.port}`, `127.0.0.1:${echo.port === 65535 ? 1 : echo.port + 1}`, 'B.Internal.evil:80']
  for (const target of targets) {
    const c = await connectVia(target)
    t.equal(c.status, 403, `${target}: 403`)
    const body = Buffer.concat([c.head, await readAll(c.socket)]).toString('utf8')
    t.match(JSON.parse(body), { error: 'GH_OUTBOUND_CONNECT_REFUSED', message: /neither a route nor on --allow-connect/ }, `${target}: stable code`)
    t.match(a.logs.findLast(l => l.event === 'outbound.refused'), { code: 'GH_OUTBOUND_CONNECT_REFUSED', target: target.toLowerCase() }, `${target}: logged`)
  }
  t.equal(echo.connections, 0, 'the only allowed target was not dialled for another name or port')
  t.equal(bApp.seen.length + b.decisions.length, 0, 'nothing reached B (CONNECT to a mesh address is not a way around mTLS)')
  t.equal(await healthz(), 200, 'the sidecar is healthy')
})

t.test('clients that reset right after sending CONNECT do not crash the sidecar', async t => {
  const echoBefore = echo.connections
  const requests = [
    `CONNECT unknown.internal:443 HTTP/1.1\r\nhost: unknown.internal:443\r\n\r\n`,
    `CONNECT b.internal:80 HTTP/1.1\r\nhost: b.internal:80\r\n\r\nGET /reset HTTP/1.1\r\nhost: b.internal\r\n\r\n`,
    `CONNECT ${echo.address} HTTP/1.1\r\nhost: ${echo.address}\r\n\r\n`,
    `CONNECT ${echo.address} HTTP/1.1\r\nhost: ${echo.address}\r\n\r\nbytes-for-the-tunnel`,
    'CONNECT unknown.internal:443 HTTP/1.1\r\nhost: unk'
  ]
  for (let round = 0; round < 10; round++) {
    for (const raw of requests) {
      const s = await openTcp(proxy)
      s.on('error', () => {})
      s.write(raw)
      // Right away, or after the refusal/tunnel has had time to start: both orders must be survived.
      if (round % 2 === 1) await new Promise(resolve => setTimeout(resolve, 5))
      s.resetAndDestroy()
      await once(s, 'close')
    }
  }
  // Let the resets reach the sidecar and any late write or error fire.
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(await healthz(), 200, '/healthz still 200')
  const refused = await connectVia('unknown.internal:443')
  t.equal(refused.status, 403, 'CONNECT is still answered')
  refused.socket.destroy()
  const routed = await viaProxy(proxy, 'http://b.internal/after-resets')
  t.equal(routed.status, 200, 'routed calls still work')
  const tunnel = await connectVia(echo.address)
  t.equal(tunnel.status, 200, 'allowed tunnels still work')
  tunnel.socket.destroy()
  t.ok(echo.connections >= echoBefore, `the echo server saw ${echo.connections - echoBefore} tunnel attempts and survived too`)
  await waitFor(() => a.sidecar.outbound!.server.listening, 1000, 'the outbound listener to be up')
  t.pass('the outbound listener is still listening')
})

t.test('CONNECT to a listed host:port tunnels bytes both ways', async t => {
  const c = await connectVia(echo.address)
  t.equal(c.status, 200)
  t.equal(c.res.statusMessage, 'Connection Established')
  const chunks: Buffer[] = []
  c.socket.on('data', (d: Buffer) => chunks.push(d))
  const payload = Buffer.from('ping \x00\x01\x02 through the tunnel\n')
  c.socket.write(payload)
  await waitFor(() => Buffer.concat(chunks).length >= payload.length, 5000, 'the echo')
  t.same(Buffer.concat([c.head, ...chunks]), payload, 'bytes echo back unchanged')
  c.socket.end()

  // Bytes sent in the same packet as the CONNECT request (the listener's `head`) are not lost.
  const raw = await openTcp(proxy)
  raw.write(`CONNECT ${echo.address} HTTP/1.1\r\nhost: ${echo.address}\r\n\r\nearly-bytes`)
  const got: Buffer[] = []
  raw.on('data', (d: Buffer) => got.push(d))
  raw.on('error', () => {})
  await waitFor(() => Buffer.concat(got).toString('latin1').includes('early-bytes'), 5000, 'the early bytes to echo')
  const text = Buffer.concat(got).toString('latin1')
  t.match(text, /^HTTP\/1\.1 200 Connection Established\r\n\r\nearly-bytes$/, 'established, then the early bytes echoed')
  raw.destroy()
})

t.test('https:// absolute URLs are refused with 400: the app calls http:// and the sidecar adds mTLS', async t => {
  const before = bApp.seen.length + b.decisions.length
  for (const url of ['https://b.internal/v1/x', 'https://b.internal:443/v1/x', 'ftp://b.internal/file']) {
    const res = await viaProxy(proxy, url)
    t.equal(res.status, 400, `${url}: 400`)
    t.match(json(res), { error: 'GH_OUTBOUND_BAD_TARGET', message: String }, `${url}: stable code`)
  }
  t.equal(bApp.seen.length + b.decisions.length, before, 'nothing reached B')
  const ok = await viaProxy(proxy, 'http://b.internal/v1/x')
  t.equal(ok.status, 200, 'the same host over http:// is routed')
})

t.test('CONNECT to a routed host:port is read by the sidecar itself: what travels in it is routed and mTLS\'d', async t => {
  const xfcc = `By=${CALLEE_ID};Hash=${createHash('sha256').update(new X509Certificate(a.svid.chainPem).raw).digest('hex')};URI=${CALLER_ID}`
  const c = await connectVia('b.internal:80')
  t.equal(c.status, 200, 'tunnel to a routed destination accepted')
  const appBefore = bApp.seen.length
  const got: Buffer[] = [c.head]
  c.socket.on('data', (d: Buffer) => got.push(d))
  c.socket.write('GET /in-tunnel?x=1 HTTP/1.1\r\nhost: b.internal\r\n\r\n')
  await waitFor(() => complete(Buffer.concat(got).toString('utf8')), 5000, 'the answer inside the tunnel')
  t.match(Buffer.concat(got).toString('utf8'), /^HTTP\/1\.1 200 /, 'an HTTP answer came back through the tunnel')
  t.equal(bApp.seen.length, appBefore + 1)
  t.equal(bApp.seen.at(-1)!.url, '/in-tunnel?x=1')
  t.equal(bApp.seen.at(-1)!.headers['x-forwarded-client-cert'], xfcc, 'it went to B over mTLS with A\'s SVID')

  // The tunnel is not a way around the routes: a request in it naming another host is judged on that host.
  got.length = 0
  c.socket.write('GET /elsewhere HTTP/1.1\r\nhost: unknown.internal\r\n\r\n')
  await waitFor(() => Buffer.concat(got).toString('utf8').includes('GH_OUTBOUND_UNKNOWN_DESTINATION'), 5000, 'the refusal inside the tunnel')
  t.match(Buffer.concat(got).toString('utf8'), /^HTTP\/1\.1 403 /, 'an unknown host inside a routed tunnel is refused')
  t.equal(bApp.seen.length, appBefore + 1, 'and sent nowhere')
  c.socket.destroy()

  // A request sent in the same packet as the CONNECT (the listener's `head`) is served, not lost.
  const raw = await openTcp(proxy)
  raw.on('error', () => {})
  const rawGot: Buffer[] = []
  raw.on('data', (d: Buffer) => rawGot.push(d))
  raw.write('CONNECT b.internal:80 HTTP/1.1\r\nhost: b.internal:80\r\n\r\nGET /in-head HTTP/1.1\r\nhost: b.internal\r\n\r\n')
  const established = 'HTTP/1.1 200 Connection Established\r\n\r\n'
  await waitFor(() => { const x = Buffer.concat(rawGot).toString('utf8'); return x.startsWith(established) && complete(x.slice(established.length)) }, 5000, 'the answer to the early request')
  t.match(Buffer.concat(rawGot).toString('utf8').slice(established.length), /^HTTP\/1\.1 200 /, 'the early request was answered inside the tunnel')
  t.equal(bApp.seen.at(-1)!.url, '/in-head')
  raw.destroy()

  // What undici's ProxyAgent and fetch do by default with HTTP_PROXY: tunnel even http:// through CONNECT.
  const agent = new ProxyAgent(`http://127.0.0.1:${proxy}`)
  t.teardown(async () => { await agent.close() })
  const res = await undiciRequest('http://b.internal/v1/default-undici', { method: 'POST', body: 'via-connect', dispatcher: agent })
  t.equal(res.statusCode, 200, 'undici ProxyAgent with its default proxyTunnel: true works')
  t.match(await res.body.json(), { method: 'POST', url: '/v1/default-undici', body: 'via-connect' })
  t.equal(bApp.seen.at(-1)!.headers['x-forwarded-client-cert'], xfcc)
  t.equal(bApp.seen.at(-1)!.headers.host, 'b.internal', 'B\'s app sees the Host A\'s app used')

  // TLS from the app inside a tunnel to a routed host is not passed through: the sidecar reads it as
  // (bad) HTTP, so the app's own TLS never reaches the destination.
  const before = bApp.seen.length + b.decisions.length
  await t.rejects(undiciRequest('https://b.internal/v1/tls-in-tunnel', { dispatcher: agent }), 'https:// through a CONNECT tunnel to a routed host fails')
  t.equal(bApp.seen.length + b.decisions.length, before, 'and nothing reached B')
  t.equal(await healthz(), 200)
})
