import t from 'tap'
import { startMesh } from './helpers/mesh.ts'
import { connectRaw, headerValues, parseResponses, rawExchange, sleep } from './helpers/raw-tls.ts'
import { DENIED_DRAIN_BYTES, DENIED_DRAIN_MS } from '../src/proxy/inbound-h1.ts'
import { waitFor } from './helpers/wait.ts'

// Issue 13.3 and 13.5: every request gets exactly one decision line with one final status, whatever
// ends it (a CONNECT, a body that fails to parse after authorization, a request line without an
// HTTP/1.x version); and a denied request's body is drained only up to a small bound.

const POLICY = `version: 1
rules:
  - name: public
    from: ["spiffe://example.org/ns/client/sa/caller"]
    paths: ["/public/*"]
`

t.test('an inbound CONNECT is answered 405 with one decision line', async t => {
  const mesh = await startMesh(t, { policy: POLICY })
  const ex = await rawExchange(mesh, 'CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n')
  t.equal(parseResponses(ex.response)[0]?.status, 405)
  t.ok(ex.serverClosed, 'the connection is closed')
  await waitFor(() => mesh.decisions.length === 1, 5000, 'a decision line')
  t.match(mesh.decisions[0], { decision: 'deny', method: 'CONNECT', rawPath: 'db.internal:5432', status: 405, error: 'connect-not-supported', caller: 'spiffe://example.org/ns/client/sa/caller' })
  t.equal(mesh.app.seen.length, 0, 'nothing reached the app')
})

t.test('a request line without HTTP/1.x is refused with 400 and one decision line', async t => {
  const mesh = await startMesh(t, { policy: POLICY })
  const bodies: Array<Record<string, unknown>> = []
  for (const line of ['GET /public/a', 'GET /public/a HTTP/0.9', 'GET /public/a HTTP/2.0']) {
    const ex = await rawExchange(mesh, `${line}\r\nHost: a\r\n\r\n`)
    const [res] = parseResponses(ex.response)
    t.equal(res?.status, 400, `${JSON.stringify(line)} -> 400`)
    bodies.push(JSON.parse(res?.body.toString() ?? '{}') as Record<string, unknown>)
  }
  await waitFor(() => mesh.decisions.length === 3, 5000, 'three decision lines')
  t.same(mesh.decisions.map(d => [d.status, d.decision]), [[400, 'deny'], [400, 'deny'], [400, 'deny']])
  t.same(bodies.map(b => [b.error, b.reason]), Array(3).fill(['GH_BAD_REQUEST', 'protocol']), 'the one error body, reason protocol')
  t.same(bodies.map(b => b.requestId), mesh.decisions.map(d => d.requestId), 'naming each decision line')
  t.equal(mesh.app.seen.length, 0, 'nothing reached the app')
})

t.test('a body that fails to parse after authorization: one line, status 400, not a second "allow 499"', async t => {
  const mesh = await startMesh(t, { policy: POLICY })
  const ex = await rawExchange(mesh, 'POST /public/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n')
  const [res] = parseResponses(ex.response)
  t.equal(res?.status, 400, 'the client gets 400')
  await waitFor(() => mesh.decisions.length >= 1, 5000, 'a decision line')
  await sleep(300) // a second line, if any, would be written when the aborted forward ends
  t.equal(mesh.decisions.length, 1, 'exactly one decision line')
  t.match(mesh.decisions[0], { decision: 'allow', path: '/public/upload', status: 400, error: /^HPE_/ })
  t.match(JSON.parse(res?.body.toString() ?? '{}'), { error: 'GH_BAD_REQUEST', reason: 'malformed', requestId: mesh.decisions[0]?.requestId }, 'the one error body, naming the decision line')
})

t.test(`a denied request's body: up to ${DENIED_DRAIN_BYTES} bytes drained on a kept-alive connection, a larger one closes it`, async t => {
  const mesh = await startMesh(t, { policy: POLICY })
  // Small body: drained, and the same connection serves the next request.
  const small = 'x'.repeat(1024)
  const ex = await rawExchange(mesh, `POST /admin/x HTTP/1.1\r\nHost: a\r\nContent-Length: ${small.length}\r\n\r\n${small}GET /public/next HTTP/1.1\r\nHost: a\r\n\r\n`)
  t.same(parseResponses(ex.response).map(r => r.status), [403, 200], 'denied, then the next request on the same connection is served')

  // A 100 MB body trickled to a denied path: answered at once with connection: close, and the
  // connection is gone within the drain bound, not after --request-timeout (30 s here).
  const socket = await connectRaw(mesh)
  t.teardown(() => { socket.destroy() })
  let received = Buffer.alloc(0)
  socket.on('data', (c: Buffer) => { received = Buffer.concat([received, c]) })
  socket.on('error', () => {})
  const closed = new Promise<void>(resolve => socket.once('close', () => { resolve() }))
  const started = Date.now()
  socket.write(`POST /admin/upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${100 * 1024 * 1024}\r\n\r\n`)
  const trickle = setInterval(() => { if (!socket.destroyed) socket.write('y'.repeat(1000)) }, 50)
  t.teardown(() => { clearInterval(trickle) })
  await Promise.race([closed, sleep(DENIED_DRAIN_MS + 3000)])
  clearInterval(trickle)
  const elapsed = Date.now() - started
  t.ok(socket.destroyed || socket.readableEnded, `the sidecar closed the connection (after ${elapsed} ms)`)
  t.ok(elapsed < DENIED_DRAIN_MS + 2000, 'within the drain bound')
  const [res] = parseResponses(received)
  t.equal(res?.status, 403, 'the client got its 403')
  t.same(headerValues(res!, 'connection'), ['close'], 'marked connection: close')
  await waitFor(() => mesh.decisions.length === 3, 5000, 'one line per request')
  t.same(mesh.decisions.map(d => d.status), [403, 200, 403])
})
