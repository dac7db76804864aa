import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { Readable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import { request as undiciRequest } from 'undici'
import { startMesh } from './helpers/mesh.ts'
import { connectRaw, rawExchange, parseResponses, headerValues, sleep } from './helpers/raw-tls.ts'
import { waitFor } from './helpers/wait.ts'

// What the sidecar does to a request on its way to the app and to the answer on its way back:
// hop-by-hop headers dropped both ways, x-request-id kept/replaced/generated and carried
// everywhere, bodies streamed both ways, Upgrade relayed after authorization, app failures turned
// into 502/504, and audit mode letting would-be denials through.

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'

t.test('hop-by-hop headers are dropped in both directions', async t => {
  const mesh = await startMesh(t, {
    appHandler: (_req, res) => {
      res.setHeader('Connection', 'x-app-secret')
      res.setHeader('x-app-secret', '1')
      res.setHeader('Keep-Alive', 'timeout=99')
      res.setHeader('Proxy-Authenticate', 'Basic realm=app')
      res.setHeader('x-app-visible', 'yes')
      res.setHeader('content-type', 'text/plain')
      res.end('ok')
    }
  })
  const ex = await rawExchange(mesh, [
    'GET /hop HTTP/1.1',
    'Host: a',
    'Connection: keep-alive, x-secret',
    'x-secret: 1',
    'Keep-Alive: timeout=5',
    'TE: trailers',
    'Proxy-Authorization: Basic x',
    'Proxy-Connection: keep-alive',
    'x-end-to-end: kept',
    '', ''
  ].join('\r\n'))
  const [res] = parseResponses(ex.response)
  t.equal(res?.status, 200, 'the request went through')
  t.equal(mesh.app.seen.length, 1)
  const h = mesh.app.seen[0]!.headers
  for (const name of ['x-secret', 'keep-alive', 'te', 'proxy-authorization', 'proxy-connection']) t.equal(h[name], undefined, `the app does not see ${name}`)
  t.notMatch(String(h.connection ?? ''), /x-secret/i, 'the Connection header the app sees does not list x-secret')
  t.equal(h['x-end-to-end'], 'kept', 'end-to-end headers are forwarded')

  t.equal(res?.body.toString(), 'ok')
  t.same(headerValues(res!, 'x-app-secret'), [], 'the header the app named in Connection is not relayed')
  t.notMatch(headerValues(res!, 'connection').join(','), /x-app-secret/i, 'the app\'s Connection value is not relayed')
  t.notMatch(headerValues(res!, 'keep-alive').join(','), /99/, 'the app\'s Keep-Alive is not relayed')
  t.same(headerValues(res!, 'proxy-authenticate'), [], 'Proxy-Authenticate is not relayed')
  t.same(headerValues(res!, 'x-app-visible'), ['yes'], 'end-to-end response headers are relayed')
})

t.test('x-request-id is kept when valid, replaced when invalid, generated when absent, and the same everywhere', async t => {
  const mesh = await startMesh(t, {
    policy: `version: 1
rules:
  - name: ok-only
    from: ["${CLIENT}"]
    paths: ["/ok/**"]
`
  })
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
  const cases: Array<{ name: string, sent: string | undefined, kept: boolean }> = [
    { name: 'valid', sent: 'abc-123.x:y=z+/_', kept: true },
    { name: '128 chars (the limit)', sent: 'a'.repeat(128), kept: true },
    { name: 'spaces', sent: 'bad id with spaces', kept: false },
    { name: '300 chars', sent: 'b'.repeat(300), kept: false },
    { name: 'a header-injection attempt', sent: 'x"}{"decision":"allow', kept: false },
    { name: 'absent', sent: undefined, kept: false }
  ]
  for (const c of cases) {
    const headers: Record<string, string> = c.sent === undefined ? {} : { 'x-request-id': c.sent }
    // Allowed: the app's header and the decision line carry the id.
    const before = mesh.decisions.length
    const ok = await mesh.request('/ok/1', { headers })
    t.equal(ok.status, 200, `${c.name}: allowed`)
    const appId = mesh.app.seen.at(-1)?.headers['x-request-id']
    if (c.kept) t.equal(appId, c.sent, `${c.name}: kept as sent`)
    else t.match(appId, UUID, `${c.name}: replaced by a generated UUID`)
    await waitFor(() => mesh.decisions.length === before + 1, 5000, 'decision line')
    t.equal(mesh.decisions.at(-1)?.requestId, appId, `${c.name}: the decision line has the id the app saw`)

    // Denied: the 403 body and the decision line carry the id.
    const denied = await mesh.request('/nope', { headers })
    t.equal(denied.status, 403, `${c.name}: denied`)
    const body = JSON.parse(denied.body) as { error: string, message: string, requestId: string }
    t.same(body, { error: 'GH_FORBIDDEN', message: 'denied by policy', requestId: body.requestId }, `${c.name}: the one error body`)
    if (c.kept) t.equal(body.requestId, c.sent, `${c.name}: the 403 body has the caller's id`)
    else t.match(body.requestId, UUID, `${c.name}: the 403 body has a generated id`)
    await waitFor(() => mesh.decisions.length === before + 2, 5000, 'decision line')
    t.equal(mesh.decisions.at(-1)?.requestId, body.requestId, `${c.name}: the decision line has the id in the 403 body`)
  }
  const generated = mesh.decisions.filter(d => UUID.test(String(d.requestId))).map(d => String(d.requestId))
  t.equal(new Set(generated).size, generated.length, 'every generated id is different')
})

t.test('bodies stream: a 20 MB request arrives intact, and a response is relayed before the app finishes it', async t => {
  let appEndedAt = 0
  const mesh = await startMesh(t, {
    appHandler: (req, res, body) => {
      if (req.url === '/upload') {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ length: Buffer.byteLength(body), sha256: createHash('sha256').update(body).digest('hex'), te: req.headers['transfer-encoding'] ?? null }))
        return
      }
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first;')
      setTimeout(() => { appEndedAt = performance.now(); res.end('second') }, 500)
    }
  })
  const agent = mesh.agent()

  // 20 MiB of generated ASCII (the test app collects the body as a string), streamed chunked.
  const CHUNK = 64 * 1024
  const CHUNKS = 320
  const hash = createHash('sha256')
  let n = 0
  const source = new Readable({
    read () {
      if (n === CHUNKS) { this.push(null); return }
      n++
      const chunk = Buffer.from(randomBytes(CHUNK / 2).toString('hex'))
      hash.update(chunk)
      this.push(chunk)
    }
  })
  const up = await undiciRequest(`${mesh.url}/upload`, { method: 'POST', body: source, dispatcher: agent, headersTimeout: 60_000, bodyTimeout: 60_000 })
  const got = await up.body.json() as { length: number, sha256: string, te: string | null }
  t.equal(up.statusCode, 200)
  t.equal(got.length, CHUNK * CHUNKS, 'all 20 MiB reached the app')
  t.equal(got.sha256, hash.digest('hex'), 'with the same sha256 as sent')
  t.equal(got.te, 'chunked', 'an unsized body is forwarded chunked')

  const res = await undiciRequest(`${mesh.url}/slow-body`, { dispatcher: agent })
  t.equal(res.statusCode, 200)
  let firstChunkAt = 0
  let text = ''
  for await (const chunk of res.body) {
    if (firstChunkAt === 0) firstChunkAt = performance.now()
    text += (chunk as Buffer).toString()
  }
  t.equal(text, 'first;second', 'the whole body arrives')
  t.ok(appEndedAt > 0, 'the app ended its response')
  t.ok(firstChunkAt < appEndedAt, `the first chunk reached the client ${Math.round(appEndedAt - firstChunkAt)} ms before the app ended (no buffering)`)
})

t.test('Upgrade (WebSocket) is relayed after authorization; a denied caller\'s upgrade never reaches the app', async t => {
  const mesh = await startMesh(t)
  const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
  let upgrades = 0
  mesh.app.server.on('upgrade', (req, socket, head: Buffer) => {
    upgrades++
    const accept = createHash('sha1').update(`${String(req.headers['sec-websocket-key'])}${GUID}`).digest('base64')
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nx-app-path: ${req.url ?? ''}\r\n\r\n`)
    if (head.length > 0) socket.write(head)
    socket.pipe(socket) // echo
    socket.on('error', () => { socket.destroy() })
  })
  const key = randomBytes(16).toString('base64')
  const upgradeRequest = `GET /ws//chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`

  const socket = await connectRaw(mesh)
  t.teardown(() => { socket.destroy() })
  let received = Buffer.alloc(0)
  socket.on('data', (c: Buffer) => { received = Buffer.concat([received, c]) })
  // Bytes sent right behind the request (the `head` Node hands over) must be relayed too.
  socket.write(`${upgradeRequest}early;`)
  await waitFor(() => received.includes('\r\n\r\n'), 5000, '101 response')
  const [res] = parseResponses(received)
  t.equal(res?.status, 101, 'the client receives 101')
  t.same(headerValues(res!, 'sec-websocket-accept'), [createHash('sha1').update(`${key}${GUID}`).digest('base64')], 'the app\'s handshake answer is relayed')
  t.same(headerValues(res!, 'x-app-path'), ['/ws/chat'], 'the app saw the normalized path')
  socket.write('ping-123')
  await waitFor(() => received.includes('early;ping-123'), 5000, 'echo')
  t.pass('bytes sent before and after the 101 are echoed back through the sidecar')
  t.equal(upgrades, 1, 'the app handled one upgrade')
  socket.destroy()
  await waitFor(() => mesh.decisions.length === 1, 5000, 'decision line')
  t.match(mesh.decisions[0], { decision: 'allow', method: 'GET', path: '/ws/chat', status: 101, caller: CLIENT })

  const intruder = mesh.pki.issue('/ns/other/sa/intruder', 'intruder')
  const ex = await rawExchange(mesh, upgradeRequest, { svid: intruder })
  const [denied] = parseResponses(ex.response)
  t.equal(denied?.status, 403, 'a denied caller\'s upgrade gets 403')
  t.equal((JSON.parse(denied?.body.toString() ?? '{}') as { error?: string }).error, 'GH_FORBIDDEN')
  t.ok(ex.serverClosed, 'and the connection is closed')
  await sleep(100) // the app's upgrade handler would have fired by now
  t.equal(upgrades, 1, 'the app\'s upgrade handler never fired for it')
  await waitFor(() => mesh.decisions.length === 2, 5000, 'decision line')
  t.match(mesh.decisions[1], { decision: 'deny', status: 403, caller: 'spiffe://example.org/ns/other/sa/intruder' })
})

t.test('app down: 502 GH_UPSTREAM_UNAVAILABLE with a decision line carrying the error', async t => {
  const closedPort = await new Promise<number>((resolve) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => { const { port } = s.address() as AddressInfo; s.close(() => { resolve(port) }) })
  })
  const mesh = await startMesh(t, { sidecar: { upstream: { host: '127.0.0.1', port: closedPort } } })
  const res = await mesh.request('/anything', { headers: { 'x-request-id': 'down-1' } })
  t.equal(res.status, 502)
  t.same(JSON.parse(res.body), { error: 'GH_UPSTREAM_UNAVAILABLE', message: 'the app cannot be reached', requestId: 'down-1' })
  await waitFor(() => mesh.decisions.length >= 1, 5000, 'decision line')
  await sleep(50) // a second line, if any, would have been written by now
  t.equal(mesh.decisions.length, 1, 'exactly one decision line')
  t.match(mesh.decisions[0], { decision: 'allow', status: 502, requestId: 'down-1', error: /^upstream-unavailable: ECONNREFUSED/ })
  t.equal(mesh.app.seen.length, 0)
})

t.test('an app answer that is not valid HTTP/1.1 (DEL in a header value) is a 502 with the parser\'s code, and the sidecar keeps serving', async t => {
  const raw = createServer((socket) => {
    socket.on('error', () => {})
    socket.once('data', () => { socket.end('HTTP/1.1 200 OK\r\nx-odd: a\x7fb\r\ncontent-length: 2\r\n\r\nok') })
  })
  await new Promise<void>(resolve => raw.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { raw.close() })
  const mesh = await startMesh(t, { sidecar: { upstream: { host: '127.0.0.1', port: (raw.address() as AddressInfo).port } } })
  const res = await mesh.request('/odd', { headers: { 'x-request-id': 'odd-1' } })
  t.equal(res.status, 502, 'nothing of it reaches the caller')
  await waitFor(() => mesh.decisions.length >= 1, 5000, 'decision line')
  t.match(mesh.decisions[0], { requestId: 'odd-1', status: 502, error: /^upstream-unavailable: HPE_/ })
  t.equal((await mesh.request('/odd')).status, 502, 'the process is still up and answering')
})

t.test('app too slow: 504 after upstreamTimeoutMs, and the sidecar keeps serving', async t => {
  const mesh = await startMesh(t, {
    sidecar: { upstreamTimeoutMs: 500 },
    appHandler: (req, res) => {
      if (req.url === '/hang') return // never answers
      res.end('fast')
    }
  })
  const started = performance.now()
  const res = await mesh.request('/hang', { headers: { 'x-request-id': 'slow-1' } })
  const took = performance.now() - started
  t.equal(res.status, 504)
  t.same(JSON.parse(res.body), { error: 'GH_UPSTREAM_TIMEOUT', message: 'the app did not answer in time', requestId: 'slow-1' })
  t.ok(took >= 450 && took < 4000, `answered after ${Math.round(took)} ms (timeout 500 ms)`)
  await waitFor(() => mesh.decisions.length >= 1, 5000, 'decision line')
  t.match(mesh.decisions[0], { status: 504, requestId: 'slow-1', error: /^upstream-timeout: / })

  const after = await mesh.request('/fast')
  t.equal(after.status, 200, 'the next request is served')
  t.equal(after.body, 'fast')
  await waitFor(() => mesh.decisions.length === 2, 5000, 'decision line')
  t.equal(mesh.decisions[1]?.status, 200)
})

t.test('audit mode: a request no rule allows still reaches the app, logged as an unenforced deny', async t => {
  const mesh = await startMesh(t, {
    policy: `version: 1
mode: audit
rules:
  - name: someone-else
    from: ["spiffe://example.org/ns/other/sa/x"]
`
  })
  const res = await mesh.request('/v1/audited', { method: 'POST', body: 'hi' })
  t.equal(res.status, 200, 'the request went through')
  t.equal(mesh.app.seen.length, 1)
  t.equal(mesh.app.seen[0]?.body, 'hi')
  await waitFor(() => mesh.decisions.length === 1, 5000, 'decision line')
  t.match(mesh.decisions[0], { decision: 'deny', mode: 'audit', enforced: false, rule: null, reason: 'no-matching-rule', status: 200, caller: CLIENT, path: '/v1/audited' })
})

t.test('Expect: 100-continue is answered by the sidecar and not passed on; the body reaches the app', async t => {
  const mesh = await startMesh(t)
  const socket = await connectRaw(mesh)
  t.teardown(() => { socket.destroy() })
  let got = ''
  socket.on('data', (c: Buffer) => { got += c.toString('latin1') })
  socket.write('POST /upload HTTP/1.1\r\nhost: gatehouse.test\r\nexpect: 100-continue\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nx-kept: yes\r\n\r\n')
  await waitFor(() => got.startsWith('HTTP/1.1 100 Continue\r\n\r\n'), 5000, 'the 100 Continue')
  t.equal(mesh.app.seen.length, 0, 'nothing reached the app before the body was sent')
  socket.write('hello')
  await waitFor(() => /HTTP\/1\.1 200 /.test(got.slice(25)), 5000, 'the final answer')
  const seen = mesh.app.seen[0]
  t.equal(seen?.body, 'hello', 'the body reached the app')
  t.equal(seen?.headers.expect, undefined, 'no Expect header at the app')
  t.equal(seen?.headers['x-kept'], 'yes', 'the other headers did')
})
