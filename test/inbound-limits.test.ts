import t from 'tap'
import { connect as tcpConnect, type Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { startMesh } from './helpers/mesh.ts'
import { clientTls, openTls, responseReader, msUntilClosed, tlsAttempt, scrapeMetrics, metricValue, statusOf } from './helpers/inbound-probe.ts'
import { waitFor } from './helpers/wait.ts'

// Inbound timeouts and limits, each set small: a slow or idle or greedy client loses its connection
// on time, and an oversized request never reaches the app. Timing bounds are generous on purpose
// (loaded CI): they only have to tell "the limit fired" from "nothing fired" (Node's own defaults are
// tens of seconds).

const CALLER = 'spiffe://example.org/ns/client/sa/caller'
// Content-length framed answers, so a raw keep-alive client can read them one by one.
const fixedApp = (_req: IncomingMessage, res: ServerResponse): void => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 }); res.end('ok') }
const GET = (path: string): string => `GET ${path} HTTP/1.1\r\nhost: gatehouse.test\r\n\r\n`
const SLACK_MS = 3000

t.test('slowloris: headers trickled byte by byte are cut off after headersTimeout', async t => {
  const headersTimeoutMs = 300
  const mesh = await startMesh(t, { appHandler: fixedApp, sidecar: { headersTimeoutMs } })
  const socket = await openTls(clientTls(mesh))
  t.teardown(() => { socket.destroy() })
  let received = ''
  socket.on('data', (c: Buffer) => { received += c.toString('latin1') })
  socket.on('error', () => {})
  const partial = 'GET /slow HTTP/1.1\r\nhost: gatehouse.test\r\nx-filler: '
  let sent = 0
  const trickle = setInterval(() => {
    if (socket.destroyed || socket.writableEnded) return
    socket.write(sent < partial.length ? partial[sent]! : 'a')
    sent++
  }, 25)
  t.teardown(() => { clearInterval(trickle) })
  const ms = await msUntilClosed(socket, headersTimeoutMs + SLACK_MS)
  clearInterval(trickle)
  t.ok(sent > 3, `the client kept sending (${sent} bytes) and never finished the headers`)
  t.ok(ms >= headersTimeoutMs - 100, `closed once the headers deadline had passed (${Math.round(ms)} ms)`)
  t.ok(ms < headersTimeoutMs + SLACK_MS, 'closed within headersTimeout + slack')
  t.ok(received === '' || statusOf(received) === 408, `answered 408 or nothing (${JSON.stringify(received.slice(0, 40))})`)
  t.equal(mesh.app.seen.length, 0, 'nothing reached the app')
  // Whether a request the parser never finished gets a (deny) decision line is the decision log's
  // business; here it only must not have been allowed.
  t.same(mesh.decisions.filter(d => d.decision !== 'deny'), [], 'nothing was allowed')
  await waitFor(() => mesh.logs.some(l => l.event === 'http.rejected'), 3000, 'an http.rejected log line')
  t.match(mesh.logs.find(l => l.event === 'http.rejected'), { code: 'ERR_HTTP_REQUEST_TIMEOUT', caller: CALLER }, 'logged as a request timeout from the authenticated caller')
  t.equal(metricValue(await scrapeMetrics(mesh), 'gatehouse_requests_rejected_total', { reason: 'ERR_HTTP_REQUEST_TIMEOUT' }), 1, 'counted')
})

t.test('handshake timeout: a TCP connection that never starts TLS is closed after handshakeTimeoutMs', async t => {
  const handshakeTimeoutMs = 300
  const mesh = await startMesh(t, { sidecar: { handshakeTimeoutMs } })
  const socket: Socket = tcpConnect(mesh.sidecar.inbound.port, '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  let received = 0
  socket.on('data', (c: Buffer) => { received += c.length })
  await new Promise<void>(resolve => socket.once('connect', () => { resolve() }))
  const ms = await msUntilClosed(socket, handshakeTimeoutMs + SLACK_MS)
  t.ok(ms >= handshakeTimeoutMs - 100, `closed once the handshake deadline had passed (${Math.round(ms)} ms)`)
  t.ok(ms < handshakeTimeoutMs + SLACK_MS, 'closed within handshakeTimeout + slack')
  t.equal(received, 0, 'the server sent nothing')
  await waitFor(() => mesh.logs.some(l => l.event === 'tls.refused'), 3000, 'a tls.refused log line')
  t.match(mesh.logs.find(l => l.event === 'tls.refused'), { level: 40, reason: 'handshake-timeout' }, 'logged as a handshake timeout')
  const text = await scrapeMetrics(mesh)
  t.equal(metricValue(text, 'gatehouse_tls_handshake_failures_total', { reason: 'handshake-timeout' }), 1, 'counted as handshake-timeout')
  t.equal(metricValue(text, 'gatehouse_tls_handshake_failures_total'), 1, 'and nothing else')
})

t.test('slow body: a request whose body trickles in is cut off after requestTimeout', async t => {
  const requestTimeoutMs = 600
  const mesh = await startMesh(t, { appHandler: fixedApp, sidecar: { headersTimeoutMs: 300, requestTimeoutMs } })
  const socket = await openTls(clientTls(mesh))
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  socket.write('POST /upload HTTP/1.1\r\nhost: gatehouse.test\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n')
  let sent = 0
  const trickle = setInterval(() => { if (!socket.destroyed) { socket.write('x'); sent++ } }, 25)
  t.teardown(() => { clearInterval(trickle) })
  const ms = await msUntilClosed(socket, requestTimeoutMs + SLACK_MS)
  clearInterval(trickle)
  t.ok(sent > 3, `the client kept sending body bytes (${sent})`)
  t.ok(ms >= requestTimeoutMs - 100, `closed once the request deadline had passed (${Math.round(ms)} ms)`)
  t.ok(ms < requestTimeoutMs + SLACK_MS, 'closed within requestTimeout + slack')
  t.equal(mesh.app.seen.length, 0, 'the app never received a complete request')
  // The headers were complete, so the request was authorized and streamed to the app; its one
  // decision line ends with the request timeout that cut it off.
  await waitFor(() => mesh.decisions.length === 1, 3000, 'a decision line')
  t.match(mesh.decisions[0], { decision: 'allow', path: '/upload', status: 408, error: 'ERR_HTTP_REQUEST_TIMEOUT' }, 'decision line records the timed-out request')
})

t.test('idle keep-alive: a connection left idle after its requests is closed after idleTimeoutMs', async t => {
  const idleTimeoutMs = 300
  const mesh = await startMesh(t, { appHandler: fixedApp, sidecar: { idleTimeoutMs } })
  const socket: TLSSocket = await openTls(clientTls(mesh))
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  const next = responseReader(socket)
  socket.write(GET('/one'))
  const one = await next()
  socket.write(GET('/two'))
  const two = await next()
  t.same([one.status, two.status], [200, 200], 'two requests on one connection')
  t.not(one.headers.connection, 'close', 'kept alive')
  t.same(mesh.app.seen.map(s => s.url), ['/one', '/two'])
  const ms = await msUntilClosed(socket, idleTimeoutMs + SLACK_MS)
  // Node 24 closes keepAliveTimeoutBuffer (1 s) after the advertised keep-alive timeout, so a client
  // reusing the socket right at the deadline does not race the close.
  t.ok(ms >= idleTimeoutMs - 100, `closed once the idle deadline had passed (${Math.round(ms)} ms)`)
  t.ok(ms < idleTimeoutMs + SLACK_MS, 'closed within idleTimeout + slack')
})

t.test('a header bigger than maxHeaderSize gets 431 and never reaches the app', async t => {
  const maxHeaderSize = 2048
  const mesh = await startMesh(t, { appHandler: fixedApp, sidecar: { maxHeaderSize } })
  const fits = await tlsAttempt(clientTls(mesh), `GET /small HTTP/1.1\r\nhost: gatehouse.test\r\nx-big: ${'a'.repeat(maxHeaderSize / 2)}\r\nconnection: close\r\n\r\n`)
  t.equal(statusOf(fits.response), 200, 'a header within the limit is served')
  t.equal(mesh.app.seen.length, 1)
  const big = await tlsAttempt(clientTls(mesh), `GET /big HTTP/1.1\r\nhost: gatehouse.test\r\nx-big: ${'a'.repeat(maxHeaderSize * 2)}\r\n\r\n`)
  t.equal(statusOf(big.response), 431, '431 Request Header Fields Too Large')
  t.match(big.response, /\r\nconnection: close\r\n/i, 'and the connection is closed')
  t.match(big.response, /\r\n\r\n\{"error":"GH_HEADERS_TOO_LARGE","message":"[^"]+","requestId":"[^"]+"\}$/, 'with the one error body')
  t.same(mesh.app.seen.map(s => s.url), ['/small'], 'the oversized request never reached the app')
  t.same(mesh.decisions.filter(d => d.decision === 'allow').map(d => d.path), ['/small'], 'only the small request was allowed')
  t.same(mesh.decisions.filter(d => d.decision !== 'allow').map(d => d.status).filter(s => s !== 431), [], 'any other decision line is the 431 refusal')
  await waitFor(() => mesh.logs.some(l => l.event === 'http.rejected'), 3000, 'an http.rejected log line')
  t.match(mesh.logs.find(l => l.event === 'http.rejected'), { code: 'HPE_HEADER_OVERFLOW', caller: CALLER })
  t.equal(metricValue(await scrapeMetrics(mesh), 'gatehouse_requests_rejected_total', { reason: 'HPE_HEADER_OVERFLOW' }), 1, 'counted')
})

t.test('maxConnections: with two connections open, a third is refused; once one closes, a new one is served', async t => {
  const mesh = await startMesh(t, { appHandler: fixedApp, sidecar: { maxConnections: 2 } })
  const held: TLSSocket[] = []
  t.teardown(() => { for (const s of held) s.destroy() })
  for (const path of ['/a', '/b']) {
    const s = await openTls(clientTls(mesh))
    s.on('error', () => {})
    held.push(s)
    const next = responseReader(s)
    s.write(GET(path))
    t.equal((await next()).status, 200, `connection ${path} served and kept open`)
  }
  const third = await tlsAttempt(clientTls(mesh), GET('/c'), 3000)
  t.equal(third.secured, false, `the third connection never completes a handshake (${third.error ?? 'closed'})`)
  t.equal(third.response, '', 'and gets no response')
  t.same(mesh.app.seen.map(s => s.url), ['/a', '/b'], 'the third request never reached the app')

  held.shift()!.destroy()
  const server = mesh.sidecar.inbound.server
  const count = async (): Promise<number> => await new Promise<number>((resolve, reject) => { server.getConnections((err, n) => { if (err !== null) reject(err); else resolve(n) }) })
  await waitFor(async () => await count() === 1, 3000, 'the server to see the closed connection')
  const fourth = await tlsAttempt(clientTls(mesh), `GET /d HTTP/1.1\r\nhost: gatehouse.test\r\nconnection: close\r\n\r\n`)
  t.equal(statusOf(fourth.response), 200, 'a new connection is served once there is room')
  t.same(mesh.app.seen.map(s => s.url), ['/a', '/b', '/d'])
})

t.test('client gone before the app answers: the request to the app is aborted, and the decision line says so', async t => {
  // An app that never answers: it only records that its request was closed under it.
  let appClosed = 0
  let appGot = 0
  const mesh = await startMesh(t, { appHandler: (_req, res) => { appGot++; res.on('close', () => { appClosed++ }) } })
  const socket = await openTls(clientTls(mesh))
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  socket.write(GET('/never-answers'))
  await waitFor(() => appGot === 1, 5000, 'the app to receive the request')
  t.equal(appClosed, 0, 'the app\'s request is open while the client waits')
  socket.destroy()
  await waitFor(() => appClosed === 1, 5000, 'the sidecar to abort the request to the app')
  await waitFor(() => mesh.decisions.length === 1, 3000, 'a decision line')
  t.match(mesh.decisions[0], { decision: 'allow', path: '/never-answers', status: 499, error: 'client-gone' }, 'recorded as abandoned by the client (499)')
})

// An app whose answer is `size` bytes, written with backpressure; it records how its answer ended.
function bigApp (size: number): { handler: (req: IncomingMessage, res: ServerResponse) => void, ended: string[] } {
  const ended: string[] = []
  const chunk = Buffer.alloc(64 * 1024, 'x')
  const handler = (_req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size })
    let left = size
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, chunk.length)
        left -= n
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { res.once('drain', pump); return }
      }
      res.end()
    }
    res.on('close', () => { ended.push(res.writableFinished ? 'finished' : 'cut') })
    pump()
  }
  return { handler, ended }
}

t.test('slow read: a caller that takes none of its answer is cut off after sendTimeout, and the app\'s connection freed', async t => {
  const sendTimeoutMs = 600
  const app = bigApp(64 * 1024 * 1024)
  const mesh = await startMesh(t, { appHandler: app.handler, sidecar: { sendTimeoutMs } })
  const socket = await openTls(clientTls(mesh))
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  let received = 0
  socket.on('data', (d: Buffer) => { received += d.length })
  socket.write(GET('/big'))
  // Read the head and a little, then nothing: the kernel's buffers and then the sidecar's fill up.
  await waitFor(() => received > 0, 5000, 'the answer to start')
  socket.pause()
  const stopped = performance.now()
  await waitFor(() => mesh.decisions.length === 1, sendTimeoutMs + SLACK_MS * 3, 'the decision line')
  const ms = performance.now() - stopped
  t.match(mesh.decisions[0], { decision: 'allow', path: '/big', error: 'client-gone' }, 'the answer ends as client-gone in its one decision line')
  t.ok(ms >= sendTimeoutMs - 100, `not before the send deadline (${Math.round(ms)} ms after the caller stopped reading)`)
  await waitFor(() => app.ended.length === 1, 5000, 'the app\'s answer to end')
  t.same(app.ended, ['cut'], 'the app\'s answer is cut off (its connection freed), not left waiting on the caller')
  t.equal(metricValue(await scrapeMetrics(mesh), 'gatehouse_requests_rejected_total', { reason: 'send-timeout' }), 1, 'counted as rejected, reason send-timeout')
  t.ok(received < 64 * 1024 * 1024, `the caller got part of it (${received} bytes)`)
})

t.test('slow read: a caller that reads in short bursts with pauses under sendTimeout gets the whole answer', async t => {
  const sendTimeoutMs = 800
  const size = 8 * 1024 * 1024
  const app = bigApp(size)
  const mesh = await startMesh(t, { appHandler: app.handler, sidecar: { sendTimeoutMs } })
  const socket = await openTls(clientTls(mesh))
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  const next = responseReader(socket)
  socket.write(GET('/big'))
  let pauses = 0
  const reader = setInterval(() => {
    // 250 ms without reading, then 20 ms of reading: each stall well under the deadline.
    socket.pause()
    pauses++
    setTimeout(() => { socket.resume() }, 250)
  }, 270)
  t.teardown(() => { clearInterval(reader) })
  const res = await next()
  clearInterval(reader)
  t.equal(res.status, 200)
  t.equal(res.body.length, size, `the whole answer arrived, after ${pauses} pauses`)
  t.ok(pauses >= 2, 'the caller did pause')
  await waitFor(() => mesh.decisions.length === 1, 5000, 'the decision line')
  t.match(mesh.decisions[0], { decision: 'allow', path: '/big', status: 200 }, 'recorded as answered')
  t.notOk('error' in mesh.decisions[0]!, 'with no error')
  t.same(app.ended, ['finished'])
})

t.test('slow read over HTTP/2: a stream whose caller takes none of its answer is cancelled after sendTimeout; the connection and its other streams live on', async t => {
  const sendTimeoutMs = 600
  const app = bigApp(64 * 1024 * 1024)
  const mesh = await startMesh(t, { appHandler: (req, res) => { if (req.url === '/small') fixedApp(req, res); else app.handler(req, res) }, sidecar: { sendTimeoutMs } })
  const session = await mesh.h2()
  const stream = session.request({ ':method': 'GET', ':path': '/big' })
  let received = 0
  let rstCode = -1
  stream.on('data', (d: Buffer) => { received += d.length; if (received > 0) stream.pause() })
  stream.on('error', () => {})
  stream.on('close', () => { rstCode = stream.rstCode })
  // Paused, the client does not consume what arrives, so the stream's flow-control window stays shut.
  await waitFor(() => received > 0, 5000, 'the answer to start')
  const stopped = performance.now()
  await waitFor(() => mesh.decisions.length === 1, sendTimeoutMs + SLACK_MS * 3, 'the decision line')
  const ms = performance.now() - stopped
  t.match(mesh.decisions[0], { decision: 'allow', path: '/big', error: 'client-gone' }, 'the answer ends as client-gone in its one decision line')
  t.ok(ms >= sendTimeoutMs - 100, `not before the send deadline (${Math.round(ms)} ms after the caller stopped reading)`)
  await waitFor(() => rstCode !== -1, 5000, 'the stream to close')
  t.equal(rstCode, 8, 'the stream is reset with CANCEL')
  await waitFor(() => app.ended.length === 1, 5000, 'the app\'s answer to end')
  t.same(app.ended, ['cut'], 'the app\'s answer is cut off (its connection freed)')
  t.equal(metricValue(await scrapeMetrics(mesh), 'gatehouse_requests_rejected_total', { reason: 'send-timeout' }), 1, 'counted as rejected, reason send-timeout')
  // Only that stream: the connection still carries requests.
  const next = await new Promise<number>((resolve, reject) => {
    const s = session.request({ ':method': 'GET', ':path': '/small' })
    s.on('response', h => { resolve(Number(h[':status'])) })
    s.on('error', reject)
    s.resume()
  })
  t.equal(next, 200, 'a new stream on the same connection is answered')
})
