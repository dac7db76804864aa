import t from 'tap'
import { Pki, startApp, startWorkload } from './helpers/mesh.ts'
import { CALLER_ID, CALLEE_ID, TD, routesYaml, viaProxy, json, closedPort, neverAnswer } from './helpers/outbound-mesh.ts'
import { tempDir } from './helpers/files.ts'

// The outbound call authenticates the destination by SPIFFE ID: a destination that presents another
// ID, or a certificate from a CA outside the trust bundle, is refused with 502 GH_PEER_IDENTITY before
// a byte of the request is sent. A destination that is down gets 502, one too slow 504.

const OTHER_ID = `spiffe://${TD}/ns/b/sa/someone-else`
// undici (A's pool) runs timeouts over 1 s on a coarse clock (about 500 ms resolution).
const UPSTREAM_TIMEOUT_MS = 1200

const dir = tempDir(t, 'gh-outbound-identity-')
const pki = new Pki(dir, TD)
const bApp = await startApp(t, (req, res, body) => {
  if (req.url?.startsWith('/slow') === true) { neverAnswer(req, res); return }
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ app: 'b', url: req.url, body }))
})
const b = await startWorkload(t, { pki, name: 'b', id: CALLEE_ID, upstreamPort: bApp.port, allow: [CALLER_ID] })

// C: a sidecar claiming B's very ID, with a certificate from an unrelated CA (same trust domain name).
const foreignDir = tempDir(t, 'gh-outbound-foreign-')
const foreignPki = new Pki(foreignDir, TD)
const cApp = await startApp(t)
const c = await startWorkload(t, { pki: foreignPki, name: 'c', id: CALLEE_ID, upstreamPort: cApp.port, allow: [CALLER_ID] })

const downPort = await closedPort()
const routes = routesYaml([
  { host: 'b.internal', address: b.inboundAddress, id: CALLEE_ID },
  { host: 'wrong-id.internal', address: b.inboundAddress, id: OTHER_ID },
  { host: 'foreign.internal', address: c.inboundAddress, id: CALLEE_ID },
  { host: 'down.internal', address: `127.0.0.1:${downPort}`, id: CALLEE_ID }
])
const a = await startWorkload(t, {
  pki,
  name: 'a',
  id: CALLER_ID,
  routes,
  sidecar: { upstreamTimeoutMs: UPSTREAM_TIMEOUT_MS }
})
const proxy = a.outboundPort

t.test('control: the correctly routed destination answers', async t => {
  const res = await viaProxy(proxy, 'http://b.internal/ok')
  t.equal(res.status, 200)
  t.match(json(res), { app: 'b', url: '/ok' })
})

t.test('a destination presenting another SPIFFE ID than the route\'s is refused: 502 GH_PEER_IDENTITY, logged, B\'s app never sees it', async t => {
  const appBefore = bApp.seen.length
  const decisionsBefore = b.decisions.length
  const logsBefore = a.logs.length
  // Several times, with and without a body: a refused connection is never pooled and reused.
  for (const [method, body] of [['GET', undefined], ['POST', 'must-not-arrive'], ['GET', undefined]] as const) {
    const res = await viaProxy(proxy, 'http://wrong-id.internal/v1/charges?amount=5', { method, ...(body === undefined ? {} : { body }) })
    t.equal(res.status, 502, `${method}: 502`)
    t.equal(res.headers['content-type'], 'application/json')
    const answer = json(res)
    t.match(answer, { error: 'GH_PEER_IDENTITY', reason: 'unexpected-id' }, `${method}: stable code and reason`)
    t.match(answer.message, CALLEE_ID, 'the message names the ID presented...')
    t.match(answer.message, OTHER_ID, '...and the one expected')
  }
  t.equal(bApp.seen.length, appBefore, 'B\'s app never saw the request')
  t.equal(b.decisions.length, decisionsBefore, 'no request reached B\'s sidecar either (refused right after the handshake)')
  const refused = a.logs.slice(logsBefore).filter(l => l.event === 'outbound.peer_refused')
  t.equal(refused.length, 3, 'one op log line per refusal')
  t.match(refused[0], { level: 50, code: 'GH_PEER_IDENTITY', reason: 'unexpected-id', host: 'wrong-id.internal', route: OTHER_ID })

  const ok = await viaProxy(proxy, 'http://b.internal/after-refusal')
  t.equal(ok.status, 200, 'the same destination under its right ID still works')
})

t.test('a destination whose certificate is from another CA is refused with 502 GH_PEER_IDENTITY, even with the expected ID', async t => {
  t.equal(c.sidecar.credentials.current!.id.toString(), CALLEE_ID, 'C claims B\'s ID')
  const logsBefore = a.logs.length
  const res = await viaProxy(proxy, 'http://foreign.internal/v1/charges', { method: 'POST', body: 'must-not-arrive' })
  t.equal(res.status, 502)
  t.match(json(res), { error: 'GH_PEER_IDENTITY', message: String })
  t.equal(cApp.seen.length, 0, 'C\'s app never saw the request')
  t.equal(c.decisions.length, 0, 'C\'s sidecar never judged a request')
  const refused = a.logs.slice(logsBefore).find(l => l.event === 'outbound.peer_refused')
  t.ok(refused, 'logged as outbound.peer_refused')
  t.match(refused, { code: 'GH_PEER_IDENTITY', host: 'foreign.internal', route: CALLEE_ID })
  t.not(refused?.reason, 'unexpected-id', `refused for its chain, not its ID (reason ${String(refused?.reason)})`)
})

t.test('a destination that is down gets 502 GH_UPSTREAM_UNAVAILABLE', async t => {
  const started = Date.now()
  const res = await viaProxy(proxy, 'http://down.internal/v1/x')
  t.equal(res.status, 502)
  t.match(json(res), { error: 'GH_UPSTREAM_UNAVAILABLE', message: String })
  t.ok(Date.now() - started < 5000, 'promptly')
  t.match(a.logs.findLast(l => l.event === 'outbound.failed'), { host: 'down.internal', route: CALLEE_ID })
})

t.test('a destination that never answers gets 504 after A\'s upstream timeout', async t => {
  const seenBefore = bApp.seen.length
  const started = Date.now()
  const res = await viaProxy(proxy, 'http://b.internal/slow', { timeoutMs: 15_000 })
  const elapsed = Date.now() - started
  t.equal(res.status, 504)
  t.match(json(res), { error: 'GH_UPSTREAM_TIMEOUT', message: String })
  t.equal(bApp.seen.length, seenBefore + 1, 'the request did reach B\'s app (which sat on it)')
  t.ok(elapsed >= UPSTREAM_TIMEOUT_MS - 600, `not (much) before the timeout (${elapsed} ms)`)
  t.ok(elapsed < 4500, `well before B's own 5 s upstream timeout (${elapsed} ms): A's timeout fired`)

  const ok = await viaProxy(proxy, 'http://b.internal/after-timeout')
  t.equal(ok.status, 200, 'the destination is still reachable afterwards')
})

t.test('with --mesh-http1 (kept-alive HTTP/1.1 mTLS connections instead of the link): the same refusals, and no request byte reaches a refused peer', async t => {
  const a1 = await startWorkload(t, {
    pki,
    name: 'a1',
    id: CALLER_ID,
    routes,
    sidecar: { upstreamTimeoutMs: UPSTREAM_TIMEOUT_MS, meshHttp1: true }
  })
  const bDecisions = b.decisions.length
  const cDecisions = c.decisions.length
  const logsBefore = a1.logs.length
  for (const [method, body] of [['GET', undefined], ['POST', 'must-not-arrive'], ['GET', undefined]] as const) {
    const res = await viaProxy(a1.outboundPort, 'http://wrong-id.internal/v1/charges', { method, ...(body === undefined ? {} : { body }) })
    t.equal(res.status, 502, `wrong ID, ${method}: 502`)
    t.match(json(res), { error: 'GH_PEER_IDENTITY', reason: 'unexpected-id' }, 'stable code and reason')
  }
  const foreign = await viaProxy(a1.outboundPort, 'http://foreign.internal/v1/charges', { method: 'POST', body: 'must-not-arrive' })
  t.equal(foreign.status, 502, 'another CA\'s certificate: 502')
  t.match(json(foreign), { error: 'GH_PEER_IDENTITY' })
  t.equal(b.decisions.length, bDecisions, 'the peer with the wrong ID never judged a request: nothing was written to it')
  t.equal(c.decisions.length, cDecisions, 'nor did the foreign one')
  t.equal(a1.logs.slice(logsBefore).filter(l => l.event === 'outbound.peer_refused').length, 4, 'each refusal logged as outbound.peer_refused')
  const down = await viaProxy(a1.outboundPort, 'http://down.internal/v1/x')
  t.match([down.status, json(down).error], [502, 'GH_UPSTREAM_UNAVAILABLE'], 'a destination that is down: 502')
  const ok = await viaProxy(a1.outboundPort, 'http://b.internal/ok?via=http1')
  t.equal(ok.status, 200, 'the right destination answers')
  t.match(json(ok), { app: 'b', url: '/ok?via=http1' })
  t.match(b.decisions.at(-1), { caller: CALLER_ID, rawPath: '/ok?via=http1', status: 200 }, 'B judged it as A1\'s call')
})
