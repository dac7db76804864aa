import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startMesh } from './helpers/mesh.ts'
import { connectRaw, parseResponses, rawExchange, sleep } from './helpers/raw-tls.ts'
import { needsTool, startProcess } from './helpers/process.ts'
import { gatehouse } from './helpers/run-cli.ts'
import { waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// Issue 13.1: after a 101 the connection is a tunnel the policy no longer sees, so only protocols on
// --upgrade-protocols (websocket by default) are relayed, and h2c never: one allowed request must not
// open an HTTP/2 connection whose streams reach denied paths.

const POLICY = `version: 1
rules:
  - name: public
    from: ["spiffe://example.org/ns/client/sa/caller"]
    paths: ["/public/*", "/ws/*"]
`

/** An HTTP/2 HEADERS frame (END_STREAM | END_HEADERS) for GET `path`, HPACK literals without indexing. */
function h2Get (streamId: number, path: string): Buffer {
  const literal = (index: number, value: string): Buffer => Buffer.concat([Buffer.from([index, value.length]), Buffer.from(value)])
  const block = Buffer.concat([Buffer.from([0x82, 0x86]), literal(0x04, path), literal(0x01, 'app')]) // :method GET, :scheme http, :path, :authority
  const head = Buffer.alloc(9)
  head.writeUIntBE(block.length, 0, 3)
  head[3] = 0x1
  head[4] = 0x5
  head.writeUInt32BE(streamId, 5)
  return Buffer.concat([head, block])
}
const H2_PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0])])

t.test('h2c upgrade to a real h2c-capable app (hypercorn) is refused: no HTTP/2 stream reaches a denied path', { skip: needsTool('hypercorn', 'python3-hypercorn') }, async t => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'app.py'), `async def app(scope, receive, send):
    if scope['type'] != 'http':
        return
    body = ('app saw %s %s over HTTP/%s' % (scope['method'], scope['path'], scope['http_version'])).encode()
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
    await send({'type': 'http.response.body', 'body': body})
`)
  const hc = await startProcess(t, 'hypercorn', ['--bind', '127.0.0.1:0', '--access-logfile', '-', 'app:app'], /Running on http:\/\/127\.0\.0\.1:(\d+)/, { cwd: dir })
  const mesh = await startMesh(t, { policy: POLICY, sidecar: { upstream: { host: '127.0.0.1', port: Number(hc.match[1]) } } })

  const plain = await mesh.request('/public/a')
  t.equal(plain.status, 200, 'an allowed plain request reaches hypercorn')
  t.match(plain.body, 'app saw GET /public/a over HTTP/1.1')

  const socket = await connectRaw(mesh)
  t.teardown(() => { socket.destroy() })
  let received = Buffer.alloc(0)
  socket.on('data', (c: Buffer) => { received = Buffer.concat([received, c]) })
  const closed = new Promise<void>(resolve => socket.once('close', () => { resolve() }))
  socket.write('GET /public/a HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n')
  await waitFor(() => received.includes('\r\n\r\n'), 5000, 'an answer to the upgrade request')
  const [res] = parseResponses(received)
  if (res?.status === 101) {
    // The bypass as an attacker runs it: HTTP/2 streams for a denied path through the tunnel.
    socket.write(Buffer.concat([H2_PREFACE, h2Get(3, '/admin/secret')]))
    await sleep(500) // an answer for /admin/secret would have come back by now
  }
  t.notOk(received.includes('/admin/secret'), 'no answer for /admin/secret came back')
  t.equal(res?.status, 400, 'the h2c upgrade is refused with 400')
  t.match(res?.body.toString(), '"error":"GH_UPGRADE_NOT_ALLOWED"')
  await Promise.race([closed, sleep(3000)])
  t.ok(socket.destroyed || socket.readableEnded, 'the sidecar closed the connection')
  t.notOk(hc.output().includes('/admin/secret'), 'hypercorn never saw /admin/secret')
  await waitFor(() => mesh.decisions.length === 2, 5000, 'two decision lines (the plain request, the refused upgrade)')
  t.match(mesh.decisions[1], { decision: 'deny', status: 400, path: '/public/a', rule: null, error: 'upgrade-not-allowed' })
  t.match(mesh.decisions[1]!.reason, /upgrade-not-allowed: "h2c"/)
})

t.test('Upgrade: only listed protocols are offered to the app, and an app that switches to another one is cut off', async t => {
  const mesh = await startMesh(t, { policy: POLICY })
  const offeredToApp: string[] = []
  mesh.app.server.on('upgrade', (req, socket) => {
    offeredToApp.push(String(req.headers.upgrade))
    socket.on('error', () => { socket.destroy() })
    socket.on('end', () => { socket.destroy() }) // an upgraded server socket is half-open by default
    // A misbehaving app: picks h2c whatever it was offered.
    if (req.url === '/ws/rogue') { socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nRAW-H2C-BYTES'); return }
    const accept = createHash('sha1').update(`${String(req.headers['sec-websocket-key'])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
    socket.end()
  })
  const ws = (path: string, upgrade: string): string => `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: ${upgrade}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`

  const mixed = await rawExchange(mesh, ws('/ws/chat', 'h2c, WebSocket'))
  t.equal(parseResponses(mixed.response)[0]?.status, 101, 'h2c next to websocket: the websocket upgrade goes ahead')
  t.same(offeredToApp, ['websocket'], 'the app was offered websocket only')

  const rogue = await rawExchange(mesh, ws('/ws/rogue', 'websocket'))
  t.equal(parseResponses(rogue.response)[0]?.status, 502, 'an app switching to a protocol that was not offered: 502')
  t.notOk(rogue.response.includes('RAW-H2C-BYTES'), 'none of its bytes reach the caller')

  for (const upgrade of ['h2c', 'foo/1', 'HTTP/2.0']) {
    const ex = await rawExchange(mesh, ws('/public/x', upgrade))
    t.equal(parseResponses(ex.response)[0]?.status, 400, `Upgrade: ${upgrade} -> 400`)
  }
  t.equal(offeredToApp.length, 2, 'refused upgrades never reached the app')
  await waitFor(() => mesh.decisions.length === 5, 5000, 'one decision line per upgrade request')
  t.same(mesh.decisions.map(d => d.status), [101, 502, 400, 400, 400])
})

t.test('--upgrade-protocols extends the list, and can never name h2c', async t => {
  const mesh = await startMesh(t, { policy: POLICY, sidecar: { upgradeProtocols: ['websocket', 'tls'] } })
  mesh.app.server.on('upgrade', (req, socket) => {
    socket.on('error', () => { socket.destroy() })
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${String(req.headers.upgrade)}\r\nConnection: Upgrade\r\n\r\n`)
  })
  const ex = await rawExchange(mesh, 'GET /public/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: TLS/1.3\r\n\r\n')
  t.equal(parseResponses(ex.response)[0]?.status, 101, 'a listed protocol (tls, offered as TLS/1.3) is relayed')

  const r = gatehouse(['proxy', '--policy', 'p.yaml', '--trust-bundle', 'b.pem', '--cert', 'c', '--key', 'k', '--upgrade-protocols', 'websocket,h2c'])
  t.equal(r.status, 2, 'listing h2c is a configuration error')
  t.match(r.stderr, /--upgrade-protocols: "h2c" can never be relayed/)
})
