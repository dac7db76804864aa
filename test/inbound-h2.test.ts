import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { createServer as createH2cServer, type ServerHttp2Stream } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { startMesh, h2Request, type Mesh } from './helpers/mesh.ts'
import { rawExchange, parseResponses } from './helpers/raw-tls.ts'
import { readCorpusJson } from './helpers/corpora.ts'
import { needsTool } from './helpers/process.ts'

// The inbound listener offers ALPN h2 and http/1.1 on one port. An HTTP/2 request is judged per
// stream with the same rules, normalization, XFCC and decision line as an HTTP/1.1 one: curl
// --http2 (a client nobody here wrote), Node's HTTP/2 client, and the path-normalization corpus sent
// both ways with the same outcome.

const run = promisify(execFile)

const POLICY = `version: 1
rules:
  - name: client-all
    from: ["spiffe://example.org/ns/client/sa/caller"]
deny:
  - name: admin
    from: ["spiffe://example.org/**"]
    paths: ["/admin/**"]
`

async function curl (mesh: Mesh, args: string[]): Promise<{ version: string, status: number, body: string }> {
  const { stdout } = await run('curl', ['-sS', '-k', '--cert', mesh.client.cert, '--key', mesh.client.key, '-w', '\n%{http_version} %{http_code}', ...args])
  const i = stdout.lastIndexOf('\n')
  const [version, status] = stdout.slice(i + 1).split(' ')
  return { version: version!, status: Number(status), body: stdout.slice(0, i) }
}

t.test('curl --http2 and curl --http1.1 on the same port, the same policy and one decision line each', { skip: needsTool('curl', 'curl') }, async t => {
  const mesh = await startMesh(t, { policy: POLICY })
  const ok = await curl(mesh, ['--http2', '-H', 'x-request-id: req-h2-1', '-H', 'x-forwarded-client-cert: By=forged', '-d', 'hello', `${mesh.url}/orders/1?x=1`])
  t.equal(ok.version, '2', 'curl negotiated HTTP/2 (ALPN h2)')
  t.equal(ok.status, 200)
  const seen = mesh.app.seen.at(-1)!
  t.equal(seen.url, '/orders/1?x=1')
  t.equal(seen.body, 'hello', 'the body reached the app')
  t.match(seen.headers['x-forwarded-client-cert'], /^By=spiffe:\/\/example\.org\/ns\/server\/sa\/payments;Hash=[0-9a-f]{64};URI=spiffe:\/\/example\.org\/ns\/client\/sa\/caller$/, 'XFCC is ours, the forged one dropped')
  t.equal(seen.headers['x-request-id'], 'req-h2-1')
  t.equal(seen.headers.host, `127.0.0.1:${mesh.sidecar.inbound.port}`, ':authority became Host for the HTTP/1.1 app')

  const denied = await curl(mesh, ['--http2', `${mesh.url}/admin/users`])
  t.equal(denied.version, '2')
  t.equal(denied.status, 403)
  t.match(JSON.parse(denied.body), { error: 'GH_FORBIDDEN', message: 'denied by policy', requestId: /\S+/ })
  const h1 = await curl(mesh, ['--http1.1', `${mesh.url}/admin/users`])
  t.equal(h1.version, '1.1', 'an HTTP/1.1 caller on the same port')
  t.equal(h1.status, 403)
  t.equal(mesh.app.seen.length, 1, 'neither denied request reached the app')
  t.same(mesh.decisions.map(d => [d.method, d.path, d.status, d.rule]), [['POST', '/orders/1', 200, 'client-all'], ['GET', '/admin/users', 403, 'admin'], ['GET', '/admin/users', 403, 'admin']], 'one decision line per request, whichever protocol carried it')
})

t.test('the path-normalization corpus: HTTP/1.1 and HTTP/2 get the same outcome on every case', async t => {
  const mesh = await startMesh(t, { policy: POLICY })
  const corpus = readCorpusJson('path-normalization', 'path_normalization_cases.json')
  const inputs: string[] = [...new Set<string>([...corpus.istio_cases, ...corpus.envoy_cases, ...corpus.istio_doc_cases].map((c: { input: string }) => c.input))]
  const session = await mesh.h2()
  let compared = 0
  let unsendable = 0
  for (const input of inputs) {
    // Only targets both protocols can carry: no CR/LF/space/control bytes (a request line cannot hold them).
    if (!/^[\x21-\x7e]+$/.test(input)) { unsendable++; continue }
    const h1 = parseResponses((await rawExchange(mesh, `GET ${input} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n`)).response)[0]
    const h1Line = mesh.decisions.at(-1)
    const h2 = await h2Request(session, { ':method': 'GET', ':path': input })
    const h2Line = mesh.decisions.at(-1)
    const h1Status = h1?.status ?? 0
    if (h1Status === 400 && h1Line?.rawPath !== input) {
      // Refused by Node's HTTP/1.1 parser before authorization (no decision line with this target);
      // over HTTP/2, nghttp2 resets a :path that is not origin-form before a stream exists, or we answer 400.
      t.ok(h2.status === 400 || (h2.status === 0 && h2.rstCode !== 0), `${JSON.stringify(input)}: refused by the HTTP/1.1 parser, refused over HTTP/2 too (${h2.status === 0 ? `RST_STREAM ${h2.rstCode}` : '400'})`)
    } else {
      t.equal(h2.status, h1Status, `${JSON.stringify(input)}: ${h1Status} both ways`)
      t.equal(h2Line?.path, h1Line?.path, `${JSON.stringify(input)}: same normalized path in the decision line`)
    }
    compared++
  }
  t.ok(compared > 300, `${compared} corpus targets compared (${unsendable} not sendable as a request line)`)
  t.same(mesh.app.seen.filter(s => /^\/admin(\/|\?|$)/.test(s.url)).map(s => s.url), [], 'no spelling of /admin reached the app by either protocol')
})

t.test('--upstream-protocol h2c: HTTP/1.1 and HTTP/2 callers reach an h2c app, trailers intact; an app restart fails nothing after it', async t => {
  let streams = 0
  const handler = (stream: ServerHttp2Stream, headers: Record<string, unknown>): void => {
    streams++
    stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-app': 'h2c' }, { waitForTrailers: true })
    stream.on('wantTrailers', () => { stream.sendTrailers({ 'x-checksum': 'abc' }) })
    stream.end(`${String(headers[':method'])} ${String(headers[':path'])} via ${String(headers[':authority'])} xfcc=${String(headers['x-forwarded-client-cert']).slice(0, 3)}`)
  }
  const listen = async (port = 0): Promise<ReturnType<typeof createH2cServer>> => {
    const app = createH2cServer()
    app.on('stream', handler)
    await new Promise<void>(resolve => app.listen(port, '127.0.0.1', resolve))
    return app
  }
  let app = await listen()
  const port = (app.address() as AddressInfo).port
  const sessions = new Set<{ destroy: () => void }>()
  const track = (a: ReturnType<typeof createH2cServer>): void => { a.on('session', s => { sessions.add(s); s.on('close', () => sessions.delete(s)) }) }
  track(app)
  t.teardown(async () => { for (const s of sessions) s.destroy(); await new Promise(resolve => app.close(resolve)) })
  const mesh = await startMesh(t, { policy: POLICY, sidecar: { upstream: { host: '127.0.0.1', port }, upstreamProtocol: 'h2c' } })

  const h1 = await mesh.request('/a?b=1', { method: 'POST', body: 'x' })
  t.equal(h1.status, 200)
  t.equal(h1.body, 'POST /a?b=1 via 127.0.0.1:' + String(mesh.sidecar.inbound.port) + ' xfcc=By=', 'an HTTP/1.1 caller reaches the h2c app')
  const session = await mesh.h2()
  const h2 = await h2Request(session, { ':method': 'GET', ':path': '/c' })
  t.equal(h2.status, 200)
  t.equal(h2.headers['x-app'], 'h2c')
  t.same(h2.trailers['x-checksum'], 'abc', 'the app\'s trailers reach an HTTP/2 caller')
  t.equal(streams, 2)

  // The app restarts: the sidecar's connection to it is gone; the next request makes a new one.
  for (const s of sessions) s.destroy()
  await new Promise(resolve => app.close(resolve))
  const down = await h2Request(session, { ':method': 'GET', ':path': '/while-down' })
  t.equal(down.status, 502, 'while the app is down: 502')
  app = await listen(port)
  track(app)
  const results = await Promise.all(Array.from({ length: 10 }, async (_, i) => await h2Request(session, { ':method': 'GET', ':path': `/after/${i}` })))
  t.same(results.map(r => r.status), Array(10).fill(200), 'after the restart every request succeeds')
  t.equal(mesh.decisions.filter(d => d.status === 502).length, 1, 'only the request made while the app was down failed')
})

t.test('a denied HTTP/2 request with a body is answered and reset; other streams on the connection go on', async t => {
  const mesh = await startMesh(t, { policy: POLICY })
  const session = await mesh.h2()
  const big = Buffer.alloc(1024 * 1024, 'x')
  const [denied, allowed] = await Promise.all([
    h2Request(session, { ':method': 'POST', ':path': '/admin/upload' }, big),
    h2Request(session, { ':method': 'GET', ':path': '/fine' })
  ])
  t.equal(denied.status, 403, 'the denied upload gets its 403')
  t.equal(allowed.status, 200, 'the other stream is served')
  t.same(mesh.app.seen.map(s => s.url), ['/fine'], 'nothing of the denied upload reached the app')
  const again = await h2Request(session, { ':method': 'GET', ':path': '/fine-again' })
  t.equal(again.status, 200, 'the connection is still usable')
})
