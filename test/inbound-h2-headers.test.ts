import t, { type Test } from 'tap'
import { startMesh } from './helpers/mesh.ts'
import { sleep } from './helpers/raw-tls.ts'
import * as h from './helpers/h2-frames.ts'
import { watchApp, attacker, stillServes, outcome, refused } from './helpers/h2-attack.ts'

// HTTP/2's own attack surface on the inbound listener (malformed headers here, floods in
// inbound-h2-floods.test.ts), over mTLS with a valid client SVID that the
// policy allows everything (so only the HTTP/2 layer can refuse). Frames are written by hand
// (helpers/h2-frames.ts). Each attack must: reach the app with nothing, be answered (GOAWAY, an
// RST_STREAM, or a refusal on the stream with its decision line), and leave the sidecar serving
// everyone else. Most of these are refused inside Node's nghttp2 before any JavaScript sees a
// stream: then there is no decision line and the RST/GOAWAY code is what the test can observe.
// What the sidecar did is printed as a comment per case.

/** One stream per case on its own connection; `fields` are sent as literals, in order, with END_STREAM. */
async function refusalCases (t: Test, title: string, cases: Array<[string, Array<[string, string]>]>): Promise<void> {
  const mesh = await startMesh(t)
  const app = watchApp(mesh)
  for (const [i, [name, fields]] of cases.entries()) {
    const requestId = `h2-attack-${i}`
    const before = app.length
    const a = await attacker(t, mesh)
    a.write(h.headers(1, h.block([...fields, ['x-request-id', requestId]])))
    await a.until(() => a.answered(1), 3000)
    await sleep(50) // a decision line, if any, is written by now (refusals inside nghttp2 get none)
    const line = mesh.decisions.find(d => d.requestId === requestId)
    t.comment(`${title}: ${name}: ${outcome(a, 1)}${line === undefined ? '; no decision line (refused inside nghttp2)' : `; decision line ${line.status} "${line.reason}"`}`)
    t.ok(refused(a, 1), `${name}: refused`)
    t.equal(app.length, before, `${name}: nothing reached the app`)
    if (line !== undefined) {
      t.match(line, { decision: 'deny', status: 400, reason: /^bad-request: / }, `${name}: the decision line says 400 bad-request`)
      t.equal(a.status(1), 400, `${name}: answered 400 on the stream`)
    }
    a.close()
  }
  await stillServes(t, mesh, app)
}

const base = (path = '/attack/p'): Array<[string, string]> => [[':method', 'GET'], [':scheme', 'https'], [':path', path], [':authority', 'gatehouse.test']]

t.test('malformed pseudo-headers', async t => {
  await refusalCases(t, 'pseudo-headers', [
    ['missing :path', [[':method', 'GET'], [':scheme', 'https'], [':authority', 'gatehouse.test']]],
    ['missing :method', [[':scheme', 'https'], [':path', '/attack/p'], [':authority', 'gatehouse.test']]],
    ['missing :scheme', [[':method', 'GET'], [':path', '/attack/p'], [':authority', 'gatehouse.test']]],
    [':path not starting with /', base('attack/relative')],
    ['empty :path', base('')],
    [':path absolute-form', base('https://elsewhere.test/attack/p')],
    ['duplicated :method', [[':method', 'GET'], [':method', 'POST'], [':scheme', 'https'], [':path', '/attack/p'], [':authority', 'gatehouse.test']]],
    ['duplicated :path', [...base(), [':path', '/attack/q']]],
    ['upper-case header name', [...base(), ['X-Upper', '1']]],
    ['pseudo-header after a regular header', [[':method', 'GET'], [':scheme', 'https'], ['x-early', '1'], [':path', '/attack/p'], [':authority', 'gatehouse.test']]],
    ['unknown pseudo-header', [...base(), [':foo', 'bar']]],
    ['response pseudo-header :status in a request', [...base(), [':status', '200']]],
    ['lower-case method (not a method token the sidecar accepts)', [[':method', 'get'], [':scheme', 'https'], [':path', '/attack/p'], [':authority', 'gatehouse.test']]]
  ])
})

t.test('connection-specific headers', async t => {
  await refusalCases(t, 'connection-specific', [
    ['connection: keep-alive', [...base(), ['connection', 'keep-alive']]],
    ['transfer-encoding: chunked', [...base(), ['transfer-encoding', 'chunked']]],
    ['keep-alive: timeout=5', [...base(), ['keep-alive', 'timeout=5']]],
    ['upgrade: websocket', [...base(), ['upgrade', 'websocket']]],
    ['proxy-connection: keep-alive', [...base(), ['proxy-connection', 'keep-alive']]],
    ['te: gzip', [...base(), ['te', 'gzip']]],
    ['te: trailers, gzip', [...base(), ['te', 'trailers, gzip']]],
    ['CRLF in :path', base('/attack/p\r\nx-injected: 1')],
    ['space and CRLF in :path', base('/attack/p HTTP/1.1\r\n')]
  ])
  // Control: te: trailers is the one TE value HTTP/2 allows; it is hop-by-hop, so the app does not get it.
  const mesh = await startMesh(t)
  const a = await attacker(t, mesh)
  a.write(h.headers(1, h.block([...base('/te-trailers'), ['te', 'trailers']])))
  await a.until(() => a.answered(1), 3000)
  t.equal(a.status(1), 200, `te: trailers is served (${outcome(a, 1)})`)
  const seen = mesh.app.seen.find(r => r.url === '/te-trailers')
  t.ok(seen, 'and reaches the app')
  t.equal(seen?.headers.te, undefined, 'without the hop-by-hop te header')
})

t.test('CR / LF / NUL in a regular header\'s name or value', async t => {
  // RFC 9113 8.2.1: such a request is malformed. nghttp2 would reset the stream, but Node registers
  // an on_invalid_header callback that ignores the field on purpose (node_http2.cc,
  // Http2Session::OnInvalidHeader), so the request goes on without it: the sidecar never sees the
  // field and cannot refuse. What must hold: the field, and anything a downgrade to HTTP/1.1 could
  // make of it, never reaches the app.
  const mesh = await startMesh(t)
  const app = watchApp(mesh)
  const cases: Array<[string, [string, string]]> = [
    ['CR in a value', ['x-v', 'a\rb']],
    ['LF in a value', ['x-v', 'a\nb']],
    ['NUL in a value', ['x-v', 'a\0b']],
    ['CRLF header injection in a value', ['x-v', 'a\r\nx-injected: 1']],
    ['CRLF in a header name', ['x-v\r\nx-injected', '1']],
    ['NUL in a header name', ['x-v\0', '1']]
  ]
  for (const [i, [name, field]] of cases.entries()) {
    const requestId = `h2-chars-${i}`
    const a = await attacker(t, mesh)
    a.write(h.headers(1, h.block([...base(`/attack/chars/${i}`), field, ['x-request-id', requestId]])))
    await a.until(() => a.answered(1), 3000)
    await sleep(50) // a decision line, if any, is written by now (refusals inside nghttp2 get none)
    const line = mesh.decisions.find(d => d.requestId === requestId)
    const seen = mesh.app.seen.find(r => r.url === `/attack/chars/${i}`)
    t.comment(`invalid characters: ${name}: ${outcome(a, 1)}${line === undefined ? '; no decision line' : `; decision line ${line.decision} ${line.status} "${line.reason}"`}${seen === undefined ? '' : `; the app got the request with headers ${JSON.stringify(Object.keys(seen.headers))}`}`)
    const leaked = seen === undefined ? [] : Object.entries(seen.headers).filter(([k, v]) => /[\r\n\0]/.test(k + String(v)) || k === 'x-v' || k === 'x-injected')
    t.same(leaked, [], `${name}: the field never reaches the app, nor anything injected through it`)
    t.ok(refused(a, 1), `${name}: refused (RFC 9113 8.2.1)`, { todo: 'Node drops the invalid field and the rest of the request is forwarded; JavaScript never sees it' })
    a.close()
  }
  t.ok(app.length <= cases.length, 'never more than one request at the app per stream')
  await stillServes(t, mesh, app)
})
