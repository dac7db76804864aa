import t, { type Test } from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { startMesh, type Mesh } from './helpers/mesh.ts'
import { connectRaw, rawExchange, parseResponses, headerValues, type ParsedResponse } from './helpers/raw-tls.ts'
import { waitFor } from './helpers/wait.ts'

// What the inbound HTTP/1.1 stage does itself now that it parses requests with llhttp and writes
// answers straight onto the TLS socket (h1-server-connection.ts, h1-server-response.ts) rather
// than through node:https's server: the body framing of each answer (chunked, close-delimited, none
// for HEAD, 204 and 304), Connection and Keep-Alive, pipelined requests answered in order, the
// 100 Continue only for an allowed request, Host required of HTTP/1.1, and an unread request body
// discarded rather than read as requests. Every exchange is over a real mTLS connection to a real
// sidecar, with raw bytes, so what is checked is exactly what a caller's parser would see.

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'
const PUBLIC_ONLY = `version: 1
rules:
  - name: public-only
    from: ["${CLIENT}"]
    paths: ["/public"]
`
const GET = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: gatehouse.test\r\n${extra}\r\n`
/** The last chunk of a chunked body (no trailers). */
const LAST_CHUNK = '\r\n0\r\n\r\n'

/** No content-length: node:http chunks it to the sidecar, which frames it again for its caller. */
const chunkingApp = (_req: IncomingMessage, res: ServerResponse): void => {
  res.setHeader('content-type', 'text/plain')
  res.write('a')
  res.write('b')
  res.end()
}

/** Content-length framed: the request's URL as the body. */
const urlApp = (req: IncomingMessage, res: ServerResponse): void => {
  const body = req.url ?? ''
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

/** One raw mTLS connection kept open: this side never half-closes, so `ended` is the sidecar's doing. */
interface Conversation {
  send: (bytes: string | Buffer) => void
  bytes: () => Buffer
  text: () => string
  responses: () => ParsedResponse[]
  /** The sidecar ended or closed the connection. */
  readonly ended: boolean
}

async function converse (t: Test, mesh: Mesh): Promise<Conversation> {
  const socket = await connectRaw(mesh)
  t.teardown(() => { socket.destroy() })
  const chunks: Buffer[] = []
  let ended = false
  socket.on('data', (c: Buffer) => { chunks.push(c) })
  socket.on('end', () => { ended = true })
  socket.on('close', () => { ended = true })
  socket.on('error', () => {})
  const bytes = (): Buffer => Buffer.concat(chunks)
  return {
    send: (b) => { socket.write(b) },
    bytes,
    text: () => bytes().toString('latin1'),
    responses: () => parseResponses(bytes()),
    get ended () { return ended }
  }
}

/** Waits for `check` like waitFor, but says whether it came true instead of throwing, for a named assertion. */
async function until (check: () => boolean, ms = 5000): Promise<boolean> {
  try { await waitFor(check, ms); return true } catch { return false }
}

/** A content-length framed response whose body has all arrived. */
const completeByLength = (r: ParsedResponse | undefined): boolean => r !== undefined && headerValues(r, 'content-length').length === 1 && r.body.length === Number(headerValues(r, 'content-length')[0])

/** The responses after any interim 100 Continue (parseResponses stops at a 1xx). */
function finalResponses (buf: Buffer): ParsedResponse[] {
  let text = buf.toString('latin1')
  while (text.startsWith('HTTP/1.1 100 ') && text.includes('\r\n\r\n')) text = text.slice(text.indexOf('\r\n\r\n') + 4)
  return parseResponses(Buffer.from(text, 'latin1'))
}

const occurrences = (text: string, what: string): number => text.split(what).length - 1

/** Request targets whose headers reached the app, as they arrive (mesh.app.seen only has requests whose body ended). */
function watchArrivals (mesh: Mesh): string[] {
  const urls: string[] = []
  mesh.app.server.prependListener('request', (req: IncomingMessage) => { urls.push(req.url ?? '') })
  return urls
}

t.test('an answer without content-length reaches an HTTP/1.1 caller chunked and intact, on a connection that stays open', async t => {
  const mesh = await startMesh(t, { appHandler: chunkingApp })
  const c = await converse(t, mesh)
  c.send(GET('/first'))
  t.ok(await until(() => c.text().endsWith(LAST_CHUNK)), 'the first answer arrives, ended by the last chunk')
  const [first] = c.responses()
  t.equal(first?.status, 200, 'status 200')
  t.same(headerValues(first!, 'transfer-encoding'), ['chunked'], 'Transfer-Encoding: chunked, once')
  t.same(headerValues(first!, 'content-length'), [], 'and no content-length')
  t.equal(first?.body.toString('latin1'), 'ab', 'the chunks carry the body ab')
  t.same(headerValues(first!, 'connection'), ['keep-alive'], 'Connection: keep-alive')
  t.notOk(c.ended, 'the sidecar left the connection open')

  c.send(GET('/second'))
  t.ok(await until(() => occurrences(c.text(), LAST_CHUNK) === 2), 'a second request on the same connection is answered')
  const rs = c.responses()
  t.same(rs.map(r => r.status), [200, 200], 'two answers, nothing else on the wire')
  t.equal(rs[1]?.body.toString('latin1'), 'ab', 'the second body is intact too')
  t.same(mesh.app.seen.map(s => s.url), ['/first', '/second'], 'the app got both requests')
})

t.test('an HTTP/1.0 caller gets the same answer close-delimited: Connection: close, no chunking, then the connection ends', async t => {
  const mesh = await startMesh(t, { appHandler: chunkingApp })
  const c = await converse(t, mesh)
  c.send('GET /old HTTP/1.0\r\nHost: gatehouse.test\r\n\r\n')
  t.ok(await until(() => c.ended), 'the sidecar ends the connection after the answer (this side never half-closed)')
  const rs = c.responses()
  t.same(rs.map(r => r.status), [200], 'one answer, 200')
  const r = rs[0]!
  t.same(headerValues(r, 'connection'), ['close'], 'Connection: close')
  t.same(headerValues(r, 'transfer-encoding'), [], 'no Transfer-Encoding (an HTTP/1.0 caller cannot read chunks)')
  t.same(headerValues(r, 'keep-alive'), [], 'no Keep-Alive')
  t.equal(r.body.toString('latin1'), 'ab', 'the body is the bytes up to the close: ab, unframed')
  t.same(mesh.app.seen.map(s => s.url), ['/old'], 'the app got the request')
})

t.test('HEAD: the app\'s content-length is relayed, no body bytes (nor chunk framing) follow, and the connection stays in step', async t => {
  const mesh = await startMesh(t, {
    appHandler: (req, res) => {
      // node:http writes no body for HEAD, whatever the handler writes.
      if (req.url === '/unsized') { res.setHeader('content-type', 'text/plain'); res.write('abc'); res.end(); return }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 })
      res.end('hello')
    }
  })
  const c = await converse(t, mesh)
  const heads = (): number => occurrences(c.text(), '\r\n\r\n')
  c.send('HEAD /sized HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n')
  t.ok(await until(() => heads() === 1), 'the answer to HEAD /sized arrives')
  c.send('HEAD /unsized HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n')
  t.ok(await until(() => heads() === 2), 'the answer to HEAD /unsized arrives on the same connection')
  c.send(GET('/sized'))
  // parseResponses does not know which answers were to HEAD: the two heads are split off here.
  const split = (): string[] => { const parts = c.text().split('\r\n\r\n'); return [`${parts[0]}\r\n\r\n`, `${parts[1]}\r\n\r\n`, parts.slice(2).join('\r\n\r\n')] }
  t.ok(await until(() => completeByLength(parseResponses(Buffer.from(split()[2]!, 'latin1'))[0])), 'the GET sent after them is answered in full')
  const [sizedText, unsizedText, rest] = split()
  const sized = parseResponses(Buffer.from(sizedText!, 'latin1'))[0]!
  const unsized = parseResponses(Buffer.from(unsizedText!, 'latin1'))[0]!
  t.equal(sized.status, 200, 'HEAD /sized: 200')
  t.same(headerValues(sized, 'content-length'), ['5'], 'HEAD /sized: the app\'s content-length: 5 is relayed')
  t.same(headerValues(sized, 'transfer-encoding'), [], 'HEAD /sized: no Transfer-Encoding')
  t.same(headerValues(sized, 'connection'), ['keep-alive'], 'HEAD /sized: Connection: keep-alive')
  t.ok(unsizedText!.startsWith('HTTP/1.1 200 '), 'no body byte between the first HEAD answer and the second')
  t.same(headerValues(unsized, 'transfer-encoding'), [], 'HEAD /unsized: no Transfer-Encoding (no chunked body follows)')
  t.same(headerValues(unsized, 'content-length'), [], 'HEAD /unsized: no content-length either')
  t.same(headerValues(unsized, 'connection'), ['keep-alive'], 'HEAD /unsized: Connection: keep-alive')
  t.ok(rest!.startsWith('HTTP/1.1 200 '), 'no body byte, nor a last chunk, between the second HEAD answer and the GET\'s')
  const got = parseResponses(Buffer.from(rest!, 'latin1'))
  t.same(got.map(r => r.status), [200], 'the GET gets one answer')
  t.equal(got[0]?.body.toString('latin1'), 'hello', 'with its 5-byte body, and nothing after it')
  t.notOk(c.ended, 'and the connection is still open')
  t.same(mesh.app.seen.map(s => `${s.method} ${s.url}`), ['HEAD /sized', 'HEAD /unsized', 'GET /sized'], 'the app got all three')
})

t.test('204 and 304 answers carry no body and leave the connection reusable', async t => {
  const mesh = await startMesh(t, {
    appHandler: (req, res) => {
      if (req.url === '/no-content') { res.writeHead(204); res.end(); return }
      if (req.url === '/not-modified') { res.writeHead(304, { etag: '"v1"' }); res.end(); return }
      urlApp(req, res)
    }
  })
  const c = await converse(t, mesh)
  c.send(GET('/no-content'))
  t.ok(await until(() => c.responses().length === 1), 'the 204 arrives')
  c.send(GET('/not-modified', 'If-None-Match: "v1"\r\n'))
  t.ok(await until(() => c.responses().length === 2), 'the 304 arrives on the same connection')
  c.send(GET('/after'))
  t.ok(await until(() => completeByLength(c.responses()[2])), 'a third request on the same connection is answered in full')
  const [noContent, notModified, after] = c.responses()
  t.same(c.responses().map(r => r.status), [204, 304, 200], 'three answers in order, nothing between them')
  t.same(headerValues(noContent!, 'transfer-encoding'), [], '204: no Transfer-Encoding')
  t.same(headerValues(noContent!, 'content-length'), [], '204: no content-length (RFC 9110 8.6)')
  t.same(headerValues(noContent!, 'connection'), ['keep-alive'], '204: Connection: keep-alive')
  t.same(headerValues(notModified!, 'transfer-encoding'), [], '304: no Transfer-Encoding')
  t.same(headerValues(notModified!, 'etag'), ['"v1"'], '304: the app\'s etag is relayed')
  t.same(headerValues(notModified!, 'connection'), ['keep-alive'], '304: Connection: keep-alive')
  t.equal(after?.body.toString('latin1'), '/after', 'the answer after them is the third request\'s, intact')
  t.notOk(c.ended, 'the connection is still open')
})

t.test('kept-alive answers say Connection: keep-alive and Keep-Alive: timeout=N; Connection: close is answered with close and the socket ends', async t => {
  const mesh = await startMesh(t, { appHandler: urlApp, sidecar: { idleTimeoutMs: 7000 } })
  const c = await converse(t, mesh)
  c.send(GET('/one'))
  t.ok(await until(() => completeByLength(c.responses()[0])), 'the first answer arrives')
  const one = c.responses()[0]!
  t.same(headerValues(one, 'connection'), ['keep-alive'], 'Connection: keep-alive')
  t.same(headerValues(one, 'keep-alive'), ['timeout=7'], 'Keep-Alive: timeout=7 (idleTimeoutMs 7000)')
  t.notOk(c.ended, 'the connection stays open')

  c.send(GET('/two', 'Connection: close\r\n'))
  t.ok(await until(() => c.ended), 'after a request with Connection: close the sidecar ends the connection')
  const rs = c.responses()
  t.same(rs.map(r => r.status), [200, 200], 'both requests were answered')
  t.equal(rs[1]?.body.toString('latin1'), '/two', 'the second answer is complete')
  t.same(headerValues(rs[1]!, 'connection'), ['close'], 'Connection: close')
  t.same(headerValues(rs[1]!, 'keep-alive'), [], 'and no Keep-Alive')
  t.same(mesh.app.seen.map(s => s.url), ['/one', '/two'], 'the app got both')
})

t.test('three pipelined requests, the middle one denied: three complete answers in order and three decision lines', async t => {
  const mesh = await startMesh(t, { policy: PUBLIC_ONLY, appHandler: urlApp })
  const c = await converse(t, mesh)
  c.send(GET('/public?n=1') + GET('/private') + GET('/public?n=3'))
  t.ok(await until(() => c.responses().length === 3 && completeByLength(c.responses()[2])), 'three answers arrive')
  const rs = c.responses()
  t.same(rs.map(r => r.status), [200, 403, 200], 'in request order: 200, 403, 200')
  t.ok(rs.every(completeByLength), 'each is complete (its body as long as its content-length)')
  t.equal(rs[0]?.body.toString('latin1'), '/public?n=1', 'the first answer is the first request\'s')
  t.match(JSON.parse(rs[1]?.body.toString('utf8') ?? '{}'), { error: 'GH_FORBIDDEN' }, 'the second is the refusal')
  t.equal(rs[2]?.body.toString('latin1'), '/public?n=3', 'the third answer is the third request\'s')
  t.ok(c.text().endsWith('\r\n\r\n/public?n=3'), 'nothing on the wire after the third answer\'s body')
  t.same(headerValues(rs[1]!, 'connection'), ['keep-alive'], 'the refusal keeps the connection')
  t.notOk(c.ended, 'the connection is still open')
  t.same(mesh.app.seen.map(s => s.url), ['/public?n=1', '/public?n=3'], 'the app got the two allowed requests, in order')
  t.ok(await until(() => mesh.decisions.length === 3), 'three decision lines')
  // Matched by target, not by line order: an allowed request's line is written when its forward ends.
  t.same(mesh.decisions.map(d => `${String(d.rawPath)} ${String(d.decision)} ${String(d.status)}`), ['/public?n=1 allow 200', '/private deny 403', '/public?n=3 allow 200'], 'one per request, with its decision and status, in the order of the answers')
})

t.test('Expect: 100-continue: a denied request gets its 403 and never a 100; an allowed one gets the 100 first', async t => {
  const mesh = await startMesh(t, { policy: PUBLIC_ONLY, appHandler: urlApp })
  const arrivals = watchArrivals(mesh)
  const POST = (path: string): string => `POST ${path} HTTP/1.1\r\nHost: gatehouse.test\r\nExpect: 100-continue\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n`

  const denied = await converse(t, mesh)
  denied.send(POST('/private')) // the body is held back, as a client waiting for the 100 does
  t.ok(await until(() => completeByLength(finalResponses(denied.bytes())[0])), 'the denied request is answered without its body')
  t.notOk(denied.text().includes('100 Continue'), 'no 100 Continue was sent: the body was never invited')
  t.ok(denied.text().startsWith('HTTP/1.1 403 '), 'the 403 is the first thing on the wire')
  const r = finalResponses(denied.bytes())[0]
  t.equal(r?.status, 403, 'the answer is 403')
  t.match(JSON.parse(r?.body.toString('utf8') ?? '{}'), { error: 'GH_FORBIDDEN' }, 'GH_FORBIDDEN')
  // node:http does not keep such a connection alive: the client may or may not send the body now, so
  // the next bytes cannot be told apart (its next request would be read as the 5 body bytes).
  t.same(r === undefined ? [] : headerValues(r, 'connection'), ['close'], 'the refusal closes the connection (the body\'s fate is unknown)')
  t.ok(await until(() => mesh.decisions.length === 1), 'one decision line')
  t.match(mesh.decisions[0], { decision: 'deny', status: 403, rawPath: '/private' }, 'deny, 403')
  t.same(arrivals, [], 'nothing reached the app')

  const allowed = await converse(t, mesh)
  allowed.send(POST('/public'))
  t.ok(await until(() => allowed.text() === 'HTTP/1.1 100 Continue\r\n\r\n'), 'the allowed request gets exactly a 100 Continue before its body is sent')
  t.same(arrivals, ['/public'], 'its head was forwarded')
  allowed.send('hello')
  t.ok(await until(() => completeByLength(finalResponses(allowed.bytes())[0])), 'then its final answer')
  t.ok(allowed.text().startsWith('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 '), 'the 100 first, then the 200, nothing between')
  t.same(finalResponses(allowed.bytes()).map(x => x.status), [200], 'one final answer')
  t.equal(mesh.app.seen.find(s => s.url === '/public')?.body, 'hello', 'the body reached the app')
})

t.test('an HTTP/1.1 request without Host: 400, one deny decision line, and the app never sees it', async t => {
  const mesh = await startMesh(t, { appHandler: urlApp })
  const arrivals = watchArrivals(mesh)
  const ex = await rawExchange(mesh, 'GET /no-host HTTP/1.1\r\n\r\n', { idleMs: 250 })
  const rs = parseResponses(ex.response)
  t.same(rs.map(r => r.status), [400], 'one answer, 400')
  t.match(JSON.parse(rs[0]?.body.toString('utf8') ?? '{}'), { error: 'GH_BAD_REQUEST' }, 'GH_BAD_REQUEST')
  t.ok(await until(() => mesh.decisions.length === 1), 'a decision line is written')
  t.match(mesh.decisions[0], { decision: 'deny', status: 400, caller: CLIENT, rawPath: '/no-host' }, 'deny, status 400, for the caller')
  t.same(arrivals, [], 'nothing reached the app')

  // The same request with a Host is forwarded: Host is what the 400 was about.
  const ok = await rawExchange(mesh, GET('/with-host'), { idleMs: 250 })
  t.same(parseResponses(ok.response).map(r => r.status), [200], 'with Host: 200')
  t.same(arrivals, ['/with-host'], 'and only that one reached the app')
  t.equal(mesh.decisions.length, 2, 'one decision line per request')
})

t.test('a body the app does not read before answering is discarded, never parsed as requests', async t => {
  const mesh = await startMesh(t, {
    appHandler: (req, res, body) => {
      if (res.headersSent) return // /early was answered when its head arrived
      const answer = JSON.stringify({ url: req.url, bodyBytes: Buffer.byteLength(body) })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) })
      res.end(answer)
    }
  })
  // Answers /early as soon as its head arrives, before reading a byte of its body.
  mesh.app.server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
    if (req.url?.startsWith('/early') === true) { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 }); res.end('early') }
  })
  const arrivals = watchArrivals(mesh)
  // 200 KB of what a parser would read as requests, were the body not discarded.
  const SIZE = 200 * 1024
  const inner = 'GET /smuggled HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n'
  const body = Buffer.from(inner.repeat(Math.ceil(SIZE / inner.length)).slice(0, SIZE), 'latin1')
  const head = (path: string): string => `POST ${path} HTTP/1.1\r\nHost: gatehouse.test\r\nContent-Type: text/plain\r\nContent-Length: ${SIZE}\r\n\r\n`

  for (const mode of ['rest after the answer', 'all in one write'] as const) {
    const before = arrivals.length
    const decisionsBefore = mesh.decisions.length
    const early = `/early-${mode === 'all in one write' ? 'one-write' : 'split'}`
    const c = await converse(t, mesh)
    if (mode === 'rest after the answer') {
      // The app's answer surely comes while most of the body is still unread.
      c.send(Buffer.concat([Buffer.from(head(early), 'latin1'), body.subarray(0, 16 * 1024)]))
      t.ok(await until(() => completeByLength(c.responses()[0])), `${mode}: the early answer arrives before the body is all sent`)
      c.send(Buffer.concat([body.subarray(16 * 1024), Buffer.from(GET('/after'), 'latin1')]))
    } else {
      c.send(Buffer.concat([Buffer.from(head(early), 'latin1'), body, Buffer.from(GET('/after'), 'latin1')]))
    }
    t.ok(await until(() => c.responses().length === 2 && completeByLength(c.responses()[1])), `${mode}: the request after the body is answered`)
    const rs = c.responses()
    t.same(rs.map(r => r.status), [200, 200], `${mode}: two answers, both 200`)
    t.equal(rs[0]?.body.toString('latin1'), 'early', `${mode}: the first is the app's early answer`)
    t.match(JSON.parse(rs[1]?.body.toString('utf8') ?? '{}'), { url: '/after', bodyBytes: 0 }, `${mode}: the second is /after's`)
    t.notOk(c.ended, `${mode}: the connection is still open`)
    t.same(arrivals.slice(before), [early, '/after'], `${mode}: the app saw exactly two requests, none of the body's /smuggled`)
    t.ok(await until(() => mesh.decisions.length === decisionsBefore + 2), `${mode}: two decision lines`)
    t.same(mesh.decisions.slice(decisionsBefore).map(d => `${String(d.rawPath)} ${String(d.status)}`).sort(), ['/after 200', `${early} 200`], `${mode}: one per request, each 200`)
  }
})

t.test('a request begun while the previous answer was in progress is not cut off by the idle deadline', async t => {
  // The idle deadline (idleTimeoutMs + 1 s without a byte) is armed after an answer when no request
  // is being read; a pipelined request whose first bytes had already arrived is being read.
  const mesh = await startMesh(t, {
    sidecar: { idleTimeoutMs: 500 },
    appHandler: (req, res) => { setTimeout(() => { urlApp(req, res) }, req.url === '/slow' ? 2500 : 200) }
  })
  const c = await converse(t, mesh)
  c.send(`${GET('/fast')}GET /sl`)
  t.ok(await until(() => completeByLength(c.responses()[0])), 'the first answer arrives')
  c.send(`ow HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n`)
  const answered = await until(() => completeByLength(c.responses()[1]), 4000)
  t.ok(answered, 'the second request, which the app answers after 2.5 s, is answered')
  t.ok(await until(() => mesh.decisions.length === 2), 'two decision lines')
  t.match(mesh.decisions.find(d => d.rawPath === '/slow'), { decision: 'allow', status: 200 }, '/slow\'s decision line says 200')
})

t.test('bytes after a request that closes the connection are never read as a request, and do not cut its answer', async t => {
  // RFC 9112 9.6: after Connection: close no further request is processed. llhttp reports the extra
  // bytes as HPE_CLOSED_CONNECTION; they must not turn into a 400 that replaces the answer still owed.
  const mesh = await startMesh(t, { appHandler: (req, res) => { setTimeout(() => { urlApp(req, res) }, 100) } })
  const arrivals = watchArrivals(mesh)
  const c = await converse(t, mesh)
  c.send(`${GET('/first', 'Connection: close\r\n')}${GET('/second')}`)
  t.ok(await until(() => c.ended), 'the sidecar closes the connection')
  const rs = c.responses()
  t.same(rs.map(r => r.status), [200], 'one answer, the first request\'s 200')
  t.equal(rs[0]?.body.toString('latin1'), '/first', 'with its body')
  t.same(headerValues(rs[0]!, 'connection'), ['close'], 'Connection: close')
  t.same(arrivals, ['/first'], 'the app saw only the first request')
  t.ok(await until(() => mesh.decisions.length === 1), 'one decision line')
  t.match(mesh.decisions[0], { decision: 'allow', rawPath: '/first', status: 200 }, 'the first request\'s, with its 200')
})

t.test('an Upgrade the stage cannot relay cleanly is refused: one with a body, one pipelined behind a request still answered', async t => {
  const mesh = await startMesh(t, { appHandler: (req, res) => { setTimeout(() => { urlApp(req, res) }, 200) } })
  let upgrades = 0
  mesh.app.server.on('upgrade', (_req, socket) => {
    upgrades++
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')
    socket.on('error', () => { socket.destroy() })
  })
  const upgrade = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: gatehouse.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`

  // With a body: llhttp reads it and then switches, so the app would wait for a body that the tunnel's first bytes would fill.
  const withBody = await converse(t, mesh)
  withBody.send(`${upgrade('/ws-body', 'Content-Length: 5\r\n')}hello`)
  t.ok(await until(() => withBody.ended), 'the connection is closed')
  t.same(withBody.responses().map(r => r.status), [400], 'answered 400')
  t.ok(await until(() => mesh.decisions.length === 1), 'one decision line')
  t.match(mesh.decisions[0], { decision: 'deny', rawPath: '/ws-body', status: 400 }, 'a deny with status 400')

  // Behind a request still being answered: that answer would land inside the tunnel.
  const pipelined = await converse(t, mesh)
  pipelined.send(`${GET('/first')}${upgrade('/ws-late')}`)
  t.ok(await until(() => pipelined.ended), 'the connection is closed')
  t.notOk(pipelined.text().includes('101 Switching Protocols'), 'no 101 reaches the caller')
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(upgrades, 0, 'no upgrade reached the app')
})

t.test('a chunked body\'s trailers never reach the next request on the connection: not its headers, not its path', async t => {
  // llhttp hands trailers over the way it hands over a long head's first headers; kept, they joined
  // the next request's head (its headers, and its URL after the previous one's). Behind a front proxy
  // that shares a kept-alive connection between its users, one user's trailers would land in another's request.
  const mesh = await startMesh(t)
  const arrivals: IncomingMessage[] = []
  mesh.app.server.prependListener('request', (req: IncomingMessage) => { arrivals.push(req) })
  const c = await converse(t, mesh)
  c.send('POST /a HTTP/1.1\r\nHost: gatehouse.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nAuthorization: Bearer from-the-trailer\r\nX-Injected: yes\r\n\r\n')
  t.ok(await until(() => c.responses().length === 1), 'the first request is answered')
  c.send('GET /b HTTP/1.1\r\nHost: gatehouse.test\r\nAuthorization: Bearer its-own\r\n\r\n')
  t.ok(await until(() => arrivals.length === 2 && c.responses().length === 2), 'the second request is answered')
  t.equal(arrivals[1]?.url, '/b', 'the app saw the second request\'s own path')
  t.equal(arrivals[1]?.headers.authorization, 'Bearer its-own', 'and its own Authorization')
  t.equal(arrivals[1]?.headers['x-injected'], undefined, 'and no header from the first request\'s trailers')
  t.equal(arrivals[0]?.headers['x-injected'], undefined, 'trailers are not relayed to the app as headers of the first request either')
  t.ok(await until(() => mesh.decisions.length === 2), 'two decision lines')
  t.same(mesh.decisions.map(d => d.rawPath), ['/a', '/b'], 'each with its own path')
})

t.test('nothing read after a closing answer is forwarded; a pipelined Upgrade still gets its decision line; too many header fields are refused', async t => {
  const mesh = await startMesh(t, { policy: PUBLIC_ONLY, appHandler: (req, res) => { setTimeout(() => { urlApp(req, res) }, 100) } })
  const arrivals = watchArrivals(mesh)
  // A denied chunked request (its answer closes the connection), then an allowed one right behind it.
  const c = await converse(t, mesh)
  c.send('POST /private HTTP/1.1\r\nHost: gatehouse.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /public?after-close HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n')
  t.ok(await until(() => c.ended), 'the connection is closed after the refusal')
  t.same(c.responses().map(r => r.status), [403], 'one answer, the 403')
  await new Promise(resolve => setTimeout(resolve, 300))
  t.same(arrivals, [], 'the request behind it never reached the app')

  // An Upgrade pipelined behind a request: the connection closes, and the Upgrade has its line.
  const before = mesh.decisions.length
  const u = await converse(t, mesh)
  u.send(`${GET('/public?first')}GET /public/ws HTTP/1.1\r\nHost: gatehouse.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`)
  t.ok(await until(() => u.ended), 'the connection is closed')
  t.ok(await until(() => mesh.decisions.slice(before).some(d => d.rawPath === '/public/ws')), 'the Upgrade has a decision line')
  t.match(mesh.decisions.find(d => d.rawPath === '/public/ws'), { decision: 'deny', status: 400, error: 'dropped' }, 'a deny, 400, dropped')

  // node:http's maxHeadersCount: 1,001 header fields are refused, not forwarded.
  const many = Array.from({ length: 1001 }, (_, i) => `x-h${i}: 1\r\n`).join('')
  const h = await rawExchange(mesh, `GET /public?many HTTP/1.1\r\nHost: gatehouse.test\r\n${many}\r\n`)
  t.same(parseResponses(h.response).map(r => r.status), [431], '431')
  t.notOk(arrivals.includes('/public?many'), 'never at the app')
})

t.test('a parse error in a request pipelined behind others: their answers first, in order, then the 400; each its own decision line', async t => {
  // The first request's answer is slow, so the bad bytes are read while it is still being answered.
  const slowFirst = (req: IncomingMessage, res: ServerResponse): void => { setTimeout(() => { urlApp(req, res) }, req.url === '/public?n=1' ? 300 : 0) }
  const mesh = await startMesh(t, { policy: PUBLIC_ONLY, appHandler: slowFirst })
  const c = await converse(t, mesh)
  c.send(GET('/public?n=1') + GET('/public?n=2') + 'NOT HTTP AT ALL\r\n\r\n')
  t.ok(await until(() => c.ended), 'the connection is closed after the 400')
  const rs = c.responses()
  t.same(rs.map(r => r.status), [200, 200, 400], 'the two requests read before the bad bytes are answered, in order, then 400')
  t.same(rs.slice(0, 2).map(r => r.body.toString('latin1')), ['/public?n=1', '/public?n=2'], 'with their own answers, whole')
  t.match(JSON.parse(rs[2]?.body.toString('utf8') ?? '{}'), { error: 'GH_BAD_REQUEST', reason: 'malformed' })
  t.ok(await until(() => mesh.decisions.length === 3), 'three decision lines')
  const [one, two, bad] = mesh.decisions
  t.match(one, { rawPath: '/public?n=1', decision: 'allow', status: 200 }, 'the slow request is recorded as answered, not blamed for the bytes after it')
  t.notOk('error' in one!, 'with no error')
  t.match(two, { rawPath: '/public?n=2', decision: 'allow', status: 200 })
  t.match(bad, { decision: 'deny', status: 400, error: 'HPE_INVALID_METHOD' }, 'the bad bytes have their own line')
  t.equal(JSON.parse(rs[2]!.body.toString('utf8')).requestId, bad!.requestId, 'and the 400 names that line\'s request id')
  t.same(mesh.app.seen.map(s => s.url), ['/public?n=1', '/public?n=2'], 'the app got the two requests and nothing else')
})
