import t from 'tap'
import { createHash, X509Certificate } from 'node:crypto'
import { EventEmitter, once } from 'node:events'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PassThrough } from 'node:stream'
import { Pool, ProxyAgent, request as undiciRequest } from 'undici'
import { Pki, startApp, startWorkload } from './helpers/mesh.ts'
import { CALLER_ID, CALLEE_ID, TD, routesYaml, startTcpProbe, viaProxy, json, openTcp, readAll } from './helpers/outbound-mesh.ts'
import { parseResponses } from './helpers/raw-tls.ts'
import { waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// Outbound routing: the app (this test) calls plain http:// URLs through its sidecar A's outbound
// listener; A looks the host up in its routes file and carries the call over mTLS, presenting A's SVID,
// to the destination's sidecar, which forwards it to its app. Unknown hosts go nowhere, and nothing
// leaves A in plaintext.

const PORT_ROUTE_ID = `spiffe://${TD}/ns/d/sa/port8080`
const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')
/** Deterministic bytes (not all the same, so a misordered chunk would change the hash). */
const pattern = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + (i >> 8)) & 0xff))

interface Seen { method: string, url: string, headers: IncomingHttpHeaders, body: Buffer }

const dir = tempDir(t, 'gh-outbound-routing-')
const pki = new Pki(dir, TD)

// B's app: records what reached it and says when the first body bytes of a request arrive (to show the
// request body is streamed through both sidecars, not buffered). /big answers with 1 MiB.
const bSeen: Seen[] = []
const bChunks = new EventEmitter()
const BIG = pattern(1024 * 1024)
const bApp = createServer((req, res) => {
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => { chunks.push(c); bChunks.emit('chunk', req.url, c) })
  req.on('end', () => {
    const body = Buffer.concat(chunks)
    bSeen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
    if (req.url === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-app': 'b' })
      res.end(BIG)
      return
    }
    const answer = JSON.stringify({ app: 'b', method: req.method, url: req.url, length: body.length, sha256: sha256(body), body: body.length <= 1024 ? body.toString('utf8') : null })
    res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json', 'x-app': 'b' })
    res.end(answer)
  })
})
await new Promise<void>(resolve => bApp.listen(0, '127.0.0.1', resolve))
t.teardown(async () => { bApp.closeAllConnections(); await new Promise(resolve => bApp.close(resolve)) })

const dApp = await startApp(t)
const b = await startWorkload(t, { pki, name: 'b', id: CALLEE_ID, upstreamPort: (bApp.address() as AddressInfo).port, allow: [CALLER_ID] })
const d = await startWorkload(t, { pki, name: 'd', id: PORT_ROUTE_ID, upstreamPort: dApp.port, allow: [CALLER_ID] })
const probe = await startTcpProbe(t)
const a = await startWorkload(t, {
  pki,
  name: 'a',
  id: CALLER_ID,
  routes: routesYaml([
    { host: 'b.internal', address: b.inboundAddress, id: CALLEE_ID },
    { host: 'b.internal:8080', address: d.inboundAddress, id: PORT_ROUTE_ID },
    { host: 'plain.internal', address: probe.address, id: CALLEE_ID },
    // Its own loopback listener (Consul's upstreams): the app sends plain HTTP there, no proxy.
    { host: 'listen.internal', address: b.inboundAddress, id: CALLEE_ID, listen: '127.0.0.1:0' }
  ])
})
const aLeafHash = sha256(new X509Certificate(a.svid.chainPem).raw)
const proxy = a.outboundPort

t.test('a routed call reaches B\'s app over mTLS with A\'s identity; path, query, Host and bodies round-trip', async t => {
  const before = bSeen.length
  const res = await viaProxy(proxy, 'http://b.internal/v1/items/42?x=1&y=a%20b&z=%2F', { headers: { 'x-custom': 'kept', 'x-forwarded-client-cert': 'By=spiffe://evil;URI=spiffe://example.org/ns/admin/sa/root' } })
  t.equal(res.status, 200)
  t.equal(res.headers['x-app'], 'b', 'response headers come back')
  t.match(json(res), { app: 'b', method: 'GET', url: '/v1/items/42?x=1&y=a%20b&z=%2F' }, 'response body comes back')
  t.equal(bSeen.length, before + 1, 'one request reached B\'s app')
  const seen = bSeen.at(-1)!
  t.equal(seen.method, 'GET')
  t.equal(seen.url, '/v1/items/42?x=1&y=a%20b&z=%2F', 'path and query as the app sent them')
  t.equal(seen.headers.host, 'b.internal', 'B\'s app sees the Host A\'s app used')
  t.equal(seen.headers['x-custom'], 'kept', 'end-to-end headers pass')
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${CALLEE_ID};Hash=${aLeafHash};URI=${CALLER_ID}`,
    'XFCC: the hop was mTLS, A presented its own SVID, B received it (a forged XFCC is replaced)')
  t.match(b.decisions.at(-1), { decision: 'allow', caller: CALLER_ID, callee: CALLEE_ID, method: 'GET', path: '/v1/items/42', status: 200 }, 'B logged an allow for A')
})

t.test('methods and request bodies with content-length round-trip', async t => {
  for (const method of ['PUT', 'PATCH', 'DELETE', 'POST']) {
    const body = `{"method":"${method}","n":${method.length}}`
    const res = await viaProxy(proxy, `http://b.internal/v1/things/${method.toLowerCase()}?m=${method}`, { method, headers: { 'content-type': 'application/json' }, body })
    t.equal(res.status, method === 'POST' ? 201 : 200, `${method}: status from B's app`)
    t.match(json(res), { method, url: `/v1/things/${method.toLowerCase()}?m=${method}`, body }, `${method}: B's app got method, target and body`)
    const seen = bSeen.at(-1)!
    t.equal(seen.method, method)
    t.equal(seen.body.toString('utf8'), body)
    t.equal(seen.headers['content-type'], 'application/json')
  }
})

t.test('a chunked body on a method Node does not chunk by default (DELETE, OPTIONS) stays framed', async t => {
  for (const method of ['DELETE', 'OPTIONS']) {
    const before = bSeen.length
    const body = new PassThrough()
    const pending = viaProxy(proxy, `http://b.internal/chunked/${method}`, { method, headers: { 'transfer-encoding': 'chunked' }, body })
    body.write('part-1;')
    body.end('part-2')
    const res = await pending
    t.equal(res.status, 200, `${method}: answered`)
    t.match(json(res), { method, url: `/chunked/${method}`, body: 'part-1;part-2' }, `${method}: the whole body reached B's app as the body`)
    t.equal(bSeen.length, before + 1, `${method}: exactly one request reached B's app (the body was not read as another request)`)
  }
})

t.test('a streamed (chunked) POST body flows through both sidecars before the app finishes sending it', async t => {
  const body = new PassThrough()
  const first = Buffer.from('first-chunk:')
  const rest = pattern(512 * 1024)
  const arrived = once(bChunks, 'chunk')
  const pending = viaProxy(proxy, 'http://b.internal/upload?stream=1', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body })
  body.write(first)
  // B's app sees the first bytes while the caller still holds the rest: nothing buffers the whole body.
  const [url, chunk] = await Promise.race([arrived, new Promise<never>((_resolve, reject) => {
    setTimeout(() => { reject(new Error('the first chunk did not reach B\'s app while the rest was held back: the body is buffered somewhere')) }, 5000).unref()
  })]) as [string, Buffer]
  t.equal(url, '/upload?stream=1', 'the first chunk reached B\'s app before the request body was complete')
  t.equal(chunk.toString('utf8'), first.toString('utf8').slice(0, chunk.length), 'and it is the start of the body')
  body.end(rest)
  const res = await pending
  t.equal(res.status, 201)
  const whole = Buffer.concat([first, rest])
  t.match(json(res), { method: 'POST', url: '/upload?stream=1', length: whole.length, sha256: sha256(whole) }, 'B\'s app received every byte, in order')
  t.equal(bSeen.at(-1)!.headers['content-length'], undefined, 'sent without content-length (chunked) end to end')
})

t.test('a large response body streams back intact', async t => {
  const res = await viaProxy(proxy, 'http://b.internal/big')
  t.equal(res.status, 200)
  t.equal(res.body.length, BIG.length)
  t.equal(sha256(res.body), sha256(BIG), 'same bytes')
})

t.test('an ordinary HTTP_PROXY client (undici ProxyAgent, absolute-form) works; a host-only route covers every port', async t => {
  const agent = new ProxyAgent({ uri: `http://127.0.0.1:${proxy}`, proxyTunnel: false })
  t.teardown(async () => { await agent.close() })
  const res = await undiciRequest('http://b.internal:9090/via-undici?q=1', { dispatcher: agent })
  t.equal(res.statusCode, 200)
  t.match(await res.body.json(), { app: 'b', method: 'GET', url: '/via-undici?q=1' })
  const seen = bSeen.at(-1)!
  t.equal(seen.headers.host, 'b.internal:9090', 'Host keeps the port the app named')
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${CALLEE_ID};Hash=${aLeafHash};URI=${CALLER_ID}`)
})

t.test('a port-specific route wins over the host-only route for that port', async t => {
  const bBefore = bSeen.length
  const res = await viaProxy(proxy, 'http://b.internal:8080/which?n=1', { method: 'POST', body: 'to-port-8080' })
  t.equal(res.status, 200, 'answered by D\'s app (echo)')
  t.equal(dApp.seen.length, 1, 'the call for b.internal:8080 went to the port route\'s destination')
  t.equal(bSeen.length, bBefore, 'not to the host-only route\'s')
  const seen = dApp.seen[0]!
  t.equal(seen.url, '/which?n=1')
  t.equal(seen.body, 'to-port-8080')
  t.equal(seen.headers.host, 'b.internal:8080')
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${PORT_ROUTE_ID};Hash=${aLeafHash};URI=${CALLER_ID}`, 'D verified A\'s SVID and A accepted D\'s ID')

  const other = await viaProxy(proxy, 'http://b.internal:8081/which?n=2')
  t.equal(other.status, 200)
  t.equal(json(other).app, 'b', 'another port of the same host falls back to the host-only route')
  t.equal(dApp.seen.length, 1)
  const plain = await viaProxy(proxy, 'http://b.internal:80/which?n=3')
  t.equal(json(plain).app, 'b', 'explicit :80 is the host-only route too')
})

t.test('an unknown host is refused with 403 and nothing is sent anywhere', async t => {
  const counts = (): number[] => [bSeen.length, dApp.seen.length, probe.connections, b.decisions.length, d.decisions.length]
  const before = counts()
  const refusedLogs = a.logs.filter(l => l.event === 'outbound.refused').length
  for (const [url, method] of [['http://unknown.internal/x', 'GET'], ['http://unknown.internal:8080/y', 'POST'], ['http://b.internal.evil/z', 'GET'], ['http://127.0.0.1:' + String(b.sidecar.inbound.port) + '/direct', 'GET']] as const) {
    const res = await viaProxy(proxy, url, { method, ...(method === 'POST' ? { body: 'secret body' } : {}) })
    t.equal(res.status, 403, `${method} ${url}: 403`)
    t.match(json(res), { error: 'GH_OUTBOUND_UNKNOWN_DESTINATION', message: /is not in the routes file/ }, `${url}: stable code`)
  }
  t.same(counts(), before, 'no app, sidecar or TCP listener received anything')
  t.equal(a.logs.filter(l => l.event === 'outbound.refused' && l.code === 'GH_OUTBOUND_UNKNOWN_DESTINATION').length, refusedLogs + 4, 'each refusal is logged')
  t.match(a.logs.findLast(l => l.event === 'outbound.refused'), { host: '127.0.0.1', port: b.sidecar.inbound.port })
})

t.test('no plaintext leaves the sidecar: the destination\'s first bytes are a TLS ClientHello', async t => {
  const before = probe.firstBytes.length
  const res = await viaProxy(proxy, 'http://plain.internal/secret?token=abc123', { method: 'POST', body: 'password=hunter2' })
  t.equal(res.status, 502, 'a destination that does not speak mTLS gets nothing and the app gets 502')
  await waitFor(() => probe.firstBytes.length > before, 5000, 'the probe to record the first bytes')
  const bytes = probe.firstBytes[before]!
  t.equal(bytes[0], 0x16, 'TLS record type: handshake')
  t.equal(bytes[1], 0x03, 'TLS major version 3')
  t.equal(bytes[5], 0x01, 'handshake type: ClientHello')
  const text = bytes.toString('latin1')
  for (const leak of ['GET', 'POST', 'secret', 'abc123', 'hunter2', 'plain.internal']) t.notOk(text.includes(leak), `no "${leak}" in the clear`)
  t.equal(probe.connections, before + 1, 'one connection attempt, no plaintext retry')
})

t.test('an http route\'s own listener: plain HTTP, no proxy, reaches B\'s app with the route\'s host, kept alive; CONNECT, Upgrade and unparseable bytes are refused there', async t => {
  const port = a.sidecar.outbound!.routeListeners.port({ host: '127.0.0.1', port: 0 })!
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 1 })
  t.teardown(async () => { await pool.close() })
  for (const n of [1, 2]) {
    const res = await pool.request({ path: `/via-listener?n=${n}`, method: 'POST', body: `body-${n}` })
    t.equal(res.statusCode, 201, `request ${n} answered by B's app`)
    t.match(await res.body.json(), { app: 'b', method: 'POST', url: `/via-listener?n=${n}`, body: `body-${n}` }, 'path, query and body round-trip')
  }
  const seen = bSeen.at(-1)!
  t.equal(seen.headers.host, 'listen.internal', 'B\'s app sees the route\'s host, whatever Host the app sent')
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${CALLEE_ID};Hash=${aLeafHash};URI=${CALLER_ID}`, 'over mTLS with A\'s SVID')

  const exchange = async (bytes: string): Promise<Buffer> => {
    const s = await openTcp(port)
    s.write(bytes)
    // The sidecar closes these connections itself; readAll gives up (and fails the checks) otherwise.
    return await readAll(s)
  }
  const pipelined = parseResponses(await exchange('GET /p?n=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'))
  t.same(pipelined.map(r => [r.status, JSON.parse(r.body.toString()).url]), [[200, '/p?n=1'], [200, '/p?n=2']], 'two pipelined requests on one connection, answered in order')
  const connect = parseResponses(await exchange('CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n'))
  t.match(connect.map(r => [r.status, JSON.parse(r.body.toString()).error]), [[400, 'GH_OUTBOUND_BAD_TARGET']], 'CONNECT is refused on a route\'s listener')
  const upgrade = parseResponses(await exchange('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n'))
  t.match(upgrade.map(r => r.status), [400], 'so is an Upgrade')
  const garbage = parseResponses(await exchange('NOT HTTP AT ALL\r\n\r\n'))
  t.match(garbage.map(r => [r.status, JSON.parse(r.body.toString()).error]), [[400, 'GH_BAD_REQUEST']], 'unparseable bytes get 400')
  t.notOk(bSeen.some(r => r.url === '/ws' || r.url.includes('evil')), 'none of these reached B\'s app')
})
