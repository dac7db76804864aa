import t, { type Test } from 'tap'
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { AppH1Pool, type AppConnectionError, type AppExchangeHandler, type AppRequest } from '../src/proxy/app-h1-pool.ts'
import { closedPort } from './helpers/outbound-mesh.ts'
import { waitFor } from './helpers/wait.ts'

// The HTTP/1.1 client to the app (src/proxy/app-h1-pool.ts) against real servers: node:http apps,
// and raw TCP servers for what node:http would not send (early hints, EOF-framed bodies, garbage, a
// kept-alive connection dropped as the next request arrives). Each case checks what reached the app
// byte for byte where the framing matters, and how many connections it took.

interface Result { status: number, headers: string[], body: string, error?: AppConnectionError }

/** Runs one exchange to its end; `slowReader` pauses after each chunk to exercise back-pressure. */
async function exchange (pool: AppH1Pool, req: Partial<AppRequest>, o: { slowReader?: boolean, stuckReader?: boolean } = {}): Promise<Result> {
  return await new Promise<Result>((resolve) => {
    const r: Result = { status: 0, headers: [], body: '' }
    let resume: () => void = () => {}
    const handler: AppExchangeHandler = {
      onStart: () => {},
      onHeaders: (status, headers, res) => { r.status = status; r.headers = headers; resume = res },
      onData: (chunk) => {
        r.body += chunk.toString('latin1')
        // A caller whose side is full and then ended: it never calls resume.
        if (o.stuckReader === true) return false
        if (o.slowReader !== true) return true
        setTimeout(resume, 5)
        return false
      },
      onComplete: () => { resolve(r) },
      onError: (err) => { r.error = err; resolve(r) }
    }
    pool.dispatch({ method: 'GET', path: '/', headers: { host: 'app' }, body: null, ...req }, handler)
  })
}

function newPool (t: Test, port: number, o: Partial<ConstructorParameters<typeof AppH1Pool>[1]> = {}): AppH1Pool {
  const pool = new AppH1Pool({ host: '127.0.0.1', port }, { responseTimeoutMs: 2000, connectTimeoutMs: 1000, ...o })
  t.teardown(async () => { await pool.close() })
  return pool
}

interface App { port: number, connections: () => number, seen: Array<{ method: string, url: string, headers: IncomingMessage['headers'], body: string }> }

async function nodeApp (t: Test, handler: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<App> {
  const seen: App['seen'] = []
  let connections = 0
  const server = createHttpServer((req, res) => {
    let body = ''
    req.setEncoding('latin1')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => { seen.push({ method: req.method!, url: req.url!, headers: req.headers, body }); handler(req, res, body) })
  })
  server.on('connection', () => { connections++ })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) })
  return { port: (server.address() as AddressInfo).port, connections: () => connections, seen }
}

/** A TCP server that answers each connection's n-th request (n from 0) with `answer(n, request bytes)`; undefined: close. */
async function rawApp (t: Test, answer: (n: number, data: string, socket: Socket) => string | undefined): Promise<{ port: number, connections: () => number, received: string[] }> {
  const sockets = new Set<Socket>()
  const received: string[] = []
  let connections = 0
  const server = createTcpServer((socket) => {
    connections++
    sockets.add(socket)
    let n = 0
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
    socket.on('data', (d: Buffer) => {
      received.push(d.toString('latin1'))
      const out = answer(n++, d.toString('latin1'), socket)
      if (out === undefined) socket.destroy()
      else if (out !== '') socket.write(out)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { for (const s of sockets) s.destroy(); await new Promise(resolve => server.close(resolve)) })
  return { port: (server.address() as AddressInfo).port, connections: () => connections, received }
}

const ok = (res: ServerResponse, body = 'ok'): void => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }); res.end(body) }

t.test('kept alive: requests one after another share one connection; hop-by-hop and Expect are never sent', async t => {
  const app = await nodeApp(t, (_req, res) => { ok(res) })
  const pool = newPool(t, app.port)
  for (let i = 0; i < 5; i++) {
    const r = await exchange(pool, { path: `/n/${i}`, headers: { host: 'app', connection: 'x-gone', 'keep-alive': '1', 'transfer-encoding': 'chunked', expect: '100-continue', 'x-kept': 'yes' } })
    t.same([r.status, r.body, r.error], [200, 'ok', undefined], `request ${i}`)
  }
  t.equal(app.connections(), 1, 'one connection for five requests')
  t.same(app.seen.map(s => s.url), ['/n/0', '/n/1', '/n/2', '/n/3', '/n/4'])
  t.equal(app.seen[0]!.headers['x-kept'], 'yes')
  t.same([app.seen[0]!.headers['transfer-encoding'], app.seen[0]!.headers.expect, app.seen[0]!.headers['keep-alive']], [undefined, undefined, undefined], 'our framing only')
})

t.test('request bodies: content-length kept, otherwise chunked; an empty POST says content-length: 0; a short body is an error', async t => {
  const app = await rawApp(t, () => 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n')
  const pool = newPool(t, app.port)
  await exchange(pool, { method: 'POST', headers: { host: 'app', 'content-length': '5' }, body: Readable.from([Buffer.from('he'), Buffer.from('llo')]) })
  await waitFor(() => app.received.join('').includes('hello'), 2000, 'the body')
  t.match(app.received.join(''), /^POST \/ HTTP\/1\.1\r\nhost: app\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\nhello/, 'content-length framing, bytes as sent')
  app.received.length = 0
  await exchange(pool, { method: 'PUT', headers: { host: 'app' }, body: Readable.from([Buffer.from('abc'), Buffer.from('defgh')]) })
  await waitFor(() => app.received.join('').endsWith('0\r\n\r\n'), 2000, 'the last chunk')
  t.match(app.received.join(''), /transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n$/, 'chunked when no length was given')
  app.received.length = 0
  await exchange(pool, { method: 'POST', headers: { host: 'app' }, body: null })
  t.match(app.received.join(''), /content-length: 0\r\n/, 'an empty POST')
  app.received.length = 0
  await exchange(pool, { method: 'GET', headers: {}, body: null })
  t.match(app.received.join(''), /^GET \/ HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\nconnection: keep-alive\r\n\r\n$/, 'a GET: no body framing; a host when the caller gave none')
  const short = await exchange(pool, { method: 'POST', headers: { host: 'app', 'content-length': '10' }, body: Readable.from([Buffer.from('abc')]) })
  t.equal(short.error?.code, 'BODY_LENGTH_MISMATCH', 'a body shorter than its content-length never leaves the app waiting')
  app.received.length = 0
  await exchange(pool, { headers: { host: 'app', 'x-name': 'Jos\u00e9' } })
  t.match(app.received.join(''), /x-name: Jos\u00e9\r\n/, 'a byte above 0x7f goes out as the one byte it came in as (latin1), not re-encoded as UTF-8')
  const bad = await exchange(pool, { headers: { host: 'app', 'x-evil': 'a\r\nx-injected: 1' } })
  t.equal(bad.error?.code, 'INVALID_HEADER_VALUE', 'a value with CR/LF is never written')
  t.notMatch(app.received.join(''), /x-injected/, 'nothing of it reached the app')
})

t.test('responses: HEAD, 204, 304, chunked with trailers, 1xx first, and an EOF-framed body; a connection is reused after each one that allows it', async t => {
  const app = await rawApp(t, (_n, data, socket) => {
    const path = /^\w+ (\S+)/.exec(data)![1]
    switch (path) {
      case '/head': return 'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n'
      case '/204': return 'HTTP/1.1 204 No Content\r\n\r\n'
      case '/304': return 'HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n'
      case '/chunked': return 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n'
      case '/hints': return 'HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi'
      case '/eof': socket.end('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end'); return ''
      default: return undefined
    }
  })
  const pool = newPool(t, app.port)
  const head = await exchange(pool, { method: 'HEAD', path: '/head' })
  t.same([head.status, head.body, head.error], [200, '', undefined], 'HEAD: no body read despite content-length')
  t.same([(await exchange(pool, { path: '/204' })).status, (await exchange(pool, { path: '/304' })).status], [204, 304], '204 and 304 end at their head')
  const chunked = await exchange(pool, { path: '/chunked' })
  t.same([chunked.status, chunked.body], [200, 'abcde'], 'a chunked body, de-chunked (the caller\'s side re-frames it)')
  const hints = await exchange(pool, { path: '/hints' })
  t.same([hints.status, hints.body, hints.headers], [200, 'hi', ['content-length', '2']], 'a 1xx is hop-level: only the final answer is passed on')
  t.equal(app.connections(), 1, 'one connection so far')
  const eof = await exchange(pool, { path: '/eof' })
  t.same([eof.status, eof.body, eof.error], [200, 'until the end', undefined], 'a body framed by the connection\'s end')
  await waitFor(() => pool.size === 0, 2000, 'the closed connection to leave the pool')
  t.equal((await exchange(pool, { path: '/204' })).status, 204, 'the next request opens a new connection')
  t.equal(app.connections(), 2)
})

t.test('failures: refused (ECONNREFUSED), too slow (timeout, 504), unparseable (HPE_*), reset mid-body; none hangs', async t => {
  const refused = await exchange(newPool(t, await closedPort()), {})
  t.same([refused.error?.code, refused.error?.timeout], ['ECONNREFUSED', false], 'nothing listens')
  const slow = await rawApp(t, () => '')
  const timedOut = await exchange(newPool(t, slow.port, { responseTimeoutMs: 300 }), {})
  t.same([timedOut.error?.code, timedOut.error?.timeout], ['RESPONSE_TIMEOUT', true], 'no head within the deadline')
  const garbage = await rawApp(t, () => 'SSH-2.0-OpenSSH\r\n\r\n')
  t.match((await exchange(newPool(t, garbage.port), {})).error?.code, /^HPE_/, 'not HTTP')
  const cut = await rawApp(t, (_n, _d, socket) => { socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart'); setTimeout(() => socket.destroy(), 50); return '' })
  const mid = await exchange(newPool(t, cut.port), {})
  t.same([mid.status, mid.body, mid.error?.code], [200, 'part', 'ECONNRESET'], 'the head and what came, then the reset as an error')
})

t.test('a kept-alive connection the app drops as the next request arrives: a safe bodiless request is retried once on a new one, a POST is not', async t => {
  // Each connection answers its first request and drops at its second: the race a pool loses when the app's keep-alive timer fires as we send.
  const app = await rawApp(t, (n) => n === 0 ? 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok' : undefined)
  const pool = newPool(t, app.port)
  t.equal((await exchange(pool, {})).status, 200)
  const again = await exchange(pool, {})
  t.same([again.status, again.body, again.error], [200, 'ok', undefined], 'retried on a fresh connection')
  t.equal(app.connections(), 2)
  const withBody = await exchange(pool, { method: 'POST', headers: { host: 'app', 'content-length': '2' }, body: Readable.from([Buffer.from('hi')]) })
  t.equal(withBody.error?.code, 'ECONNRESET', 'a body may have been acted on: not sent twice')
  t.equal((await exchange(pool, {})).status, 200, 'a fresh connection again')
  const posts = app.received.filter(r => r.startsWith('POST /capture')).length
  const capture = await exchange(pool, { method: 'POST', path: '/capture' })
  t.equal(capture.error?.code, 'ECONNRESET', 'a bodiless POST is not safe to repeat either (the app may have acted on it, then dropped the connection)')
  t.equal(app.received.filter(r => r.startsWith('POST /capture')).length, posts + 1, 'the app saw it once')
})

t.test('limits: at most `connections` at once, the rest wait their turn; idle connections close after keepAliveMs; the app\'s Connection: close is honoured', async t => {
  let open = 0
  let peak = 0
  const app = await nodeApp(t, (req, res) => {
    open++
    peak = Math.max(peak, open)
    setTimeout(() => { open--; if (req.url === '/close') res.setHeader('connection', 'close'); ok(res) }, 30)
  })
  const pool = newPool(t, app.port, { connections: 2, keepAliveMs: 200 })
  const all = await Promise.all(Array.from({ length: 6 }, async (_, i) => await exchange(pool, { path: `/w/${i}` })))
  t.same(all.map(r => r.status), [200, 200, 200, 200, 200, 200], 'every request answered')
  t.equal(peak, 2, 'never more than two at the app')
  t.equal(app.connections(), 2)
  await waitFor(() => pool.size === 0, 3000, 'idle connections to be closed')
  t.pass('idle connections closed after keepAliveMs')
  await exchange(pool, { path: '/close' })
  await waitFor(() => pool.size === 0, 2000, 'the app\'s Connection: close')
  await exchange(pool, { path: '/again' })
  t.equal(app.connections(), 4, 'a new connection after the app closed its own')
})

t.test('back-pressure and an early answer: a slow reader pauses the app; an answer before the whole body closes the connection and lets the body go', async t => {
  const big = 'x'.repeat(2 * 1024 * 1024)
  const app = await nodeApp(t, (req, res) => {
    if (req.url === '/early') return
    ok(res, big)
  })
  const pool = newPool(t, app.port)
  const slow = await exchange(pool, {}, { slowReader: true })
  t.equal(slow.body.length, big.length, 'all 2 MiB, read with pauses')
  const early = await rawApp(t, () => 'HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n')
  const earlyPool = newPool(t, early.port)
  const body = new Readable({ read () {} })
  body.push('first part')
  const r = await exchange(earlyPool, { method: 'POST', headers: { host: 'app' }, body })
  t.equal(r.status, 413, 'the early answer is passed on')
  await waitFor(() => earlyPool.size === 0, 2000, 'the connection to close')
  body.push('more')
  body.push(null)
  t.ok(body.readableFlowing, 'the rest of the body flows (into nothing), so the caller\'s side can finish reading it')
})

t.test('a handler that throws on the response head (the caller\'s side refusing to write it) fails that exchange, not the process', async t => {
  const app = await nodeApp(t, (_req, res) => { ok(res) })
  const pool = newPool(t, app.port)
  const err = await new Promise<AppConnectionError>((resolve) => {
    pool.dispatch({ method: 'GET', path: '/', headers: { host: 'app' }, body: null }, {
      onStart: () => {},
      onHeaders: () => { throw new TypeError('Invalid character in header content') },
      onData: () => true,
      onComplete: () => { resolve(new Error('completed') as AppConnectionError) },
      onError: resolve
    })
  })
  t.equal(err.code, 'INVALID_RESPONSE')
  t.equal((await exchange(pool, {})).status, 200, 'the next request is served')
})

t.test('no answer reaches the wrong exchange: bytes after a response, or left on an idle connection, drop the connection; the next exchange gets its own answer', async t => {
  const app = await rawApp(t, (_n, data) => {
    const path = /^\w+ (\S+)/.exec(data)![1]
    // A miscounted body: a second "response" follows the first in the same write.
    if (path === '/A') return 'HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nfor-AliceHTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\nAlice-secret!!'
    // A complete answer, then the start of another left on the connection.
    if (path === '/C') return 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 302 Found\r\nlocation: https://evil.example/\r\nx-pad: '
    if (path === '/head') return 'HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody'
    return `HTTP/1.1 200 OK\r\ncontent-length: ${path!.length}\r\n\r\n${path!}`
  })
  const pool = newPool(t, app.port, { connections: 1 })
  const [a, b] = await Promise.all([exchange(pool, { path: '/A' }), exchange(pool, { path: '/B' })])
  t.same([a.status, a.body], [200, 'for-Alice'])
  t.same([b.status, b.body, b.error], [200, '/B', undefined], 'B waited for the one connection and got its own answer, not the extra bytes')
  t.same([(await exchange(pool, { path: '/C' })).body, (await exchange(pool, { path: '/D' })).body], ['ok', '/D'], 'a head left on an idle connection never prefixes the next answer')
  const head = await exchange(pool, { method: 'HEAD', path: '/head' })
  t.same([head.status, head.body], [200, ''], 'HEAD with a body it should not have')
  t.same((await exchange(pool, { path: '/E' })).body, '/E', 'the body that followed was not taken for the next answer')
})

t.test('a response whose last chunk met a full caller leaves the connection reading: the next exchange on it is answered', async t => {
  const app = await rawApp(t, () => 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello')
  const pool = newPool(t, app.port, { responseTimeoutMs: 1000 })
  const first = await exchange(pool, {}, { stuckReader: true })
  t.same([first.status, first.body], [200, 'hello'])
  const second = await exchange(pool, {})
  t.same([second.status, second.error], [200, undefined], 'not a 504 from a paused socket')
  t.equal(app.connections(), 1)
})

t.test('an idle connection the app has just closed is not handed out; a waiter whose caller left does not cost a connection', async t => {
  const app = await rawApp(t, (_n, _d, socket) => { socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'); return '' })
  const pool = newPool(t, app.port)
  t.equal((await exchange(pool, {})).status, 200)
  // Dispatched as the app's FIN arrives, before the socket's 'close': it must get a new connection, not the ended one.
  const idle = (pool as unknown as { free: Array<{ socket: Socket }> }).free
  const post = await new Promise<Result>((resolve) => {
    idle[0]!.socket.once('end', () => { setImmediate(() => { void exchange(pool, { method: 'POST', headers: { host: 'app', 'content-length': '2' }, body: Readable.from([Buffer.from('hi')]) }).then(resolve) }) })
  })
  t.same([post.status, post.error], [200, undefined])
  const busy = await nodeApp(t, (_req, res) => { setTimeout(() => { ok(res) }, 50) })
  const one = newPool(t, busy.port, { connections: 1 })
  const inFlight = exchange(one, {})
  let aborted = false
  one.dispatch({ method: 'GET', path: '/gone', headers: { host: 'app' }, body: null }, {
    // The caller is gone by the time a connection is free.
    onStart: (abort) => { aborted = true; abort() },
    onHeaders: () => {},
    onData: () => true,
    onComplete: () => {},
    onError: () => {}
  })
  t.equal((await inFlight).status, 200)
  t.ok(aborted, 'the waiter was started and aborted')
  t.equal((await exchange(one, {})).status, 200)
  t.equal(busy.connections(), 1, 'its abort left the connection in the pool')
  t.notOk(busy.seen.some(s => s.url === '/gone'), 'nothing of it was sent')
})
