import t from 'tap'
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Pki, startWorkload, type Tap, type Workload } from './helpers/mesh.ts'
import { stopOnce, verifyInProcess } from './helpers/audit-log.ts'
import { startEchoServer, openTcp, readAll, closedPort, viaProxy } from './helpers/outbound-mesh.ts'
import { waitFor } from './helpers/wait.ts'
import { replaceFile, tempDir } from './helpers/files.ts'

// Opaque TCP (issue 17) on 127.0.0.1: a caller sidecar's tcp route listener, mTLS with ALPN
// gatehouse-tcp/1 to the callee's inbound listener, a policy rule with `ports`, and a plain TCP app.

const dir = tempDir(t)
const pki = new Pki(dir)
const TD = pki.ca.trustDomain
const A = `spiffe://${TD}/ns/a/sa/caller`
const C = `spiffe://${TD}/ns/c/sa/stranger`
const B = `spiffe://${TD}/ns/b/sa/cache`

const tcpPolicy = (port: number, from: string[] = [A]): string => `version: 1
rules:
  - name: cache-clients
    from: ${JSON.stringify(from)}
    ports: [${port}]
`
const tcpRoutes = (callee: Workload, appPort: number, listen = '127.0.0.1:0'): string => `version: 1
routes:
  - host: cache.internal
    protocol: tcp
    listen: ${listen}
    address: ${callee.inboundAddress}
    id: ${callee.id}
    port: ${appPort}
`

/** A TCP app that answers only once the client has finished sending: proves half-close works. */
async function startCountingApp (t: Tap): Promise<{ port: number, connections: number }> {
  const app = { port: 0, connections: 0 }
  const sockets = new Set<Socket>()
  const server = createTcpServer({ allowHalfOpen: true }, socket => {
    app.connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let n = 0
    socket.on('data', (c: Buffer) => { n += c.length })
    socket.on('end', () => { socket.end(`got ${n} bytes`) })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  app.port = (server.address() as AddressInfo).port
  t.teardown(async () => { for (const s of sockets) s.destroy(); await new Promise(resolve => server.close(resolve)) })
  return app
}

/** Caller and callee sidecars: the callee serves `appPort` (its app at `appAddress`) under `policy`. */
async function startPair (t: Tap, o: { appPort: number, appAddress: { host: string, port: number }, policy: string, callerId?: string, callerTtlMs?: number, tcpIdleTimeoutMs?: number }): Promise<{ a: Workload, b: Workload, listenPort: () => number }> {
  const b = await startWorkload(t, { pki, name: `b${o.appPort}-${Math.random().toString(36).slice(2, 6)}`, id: B, policy: o.policy, sidecar: { tcpUpstreams: new Map([[o.appPort, o.appAddress]]), ...(o.tcpIdleTimeoutMs === undefined ? {} : { tcpIdleTimeoutMs: o.tcpIdleTimeoutMs }) } })
  const a = await startWorkload(t, { pki, name: `a${o.appPort}-${Math.random().toString(36).slice(2, 6)}`, id: o.callerId ?? A, routes: tcpRoutes(b, o.appPort), ...(o.callerTtlMs === undefined ? {} : { ttlMs: o.callerTtlMs }) })
  const listenPort = (): number => a.sidecar.outbound!.routeListeners.port({ host: '127.0.0.1', port: 0 })!
  return { a, b, listenPort }
}

const send = async (port: number, data: string): Promise<string> => {
  const s = await openTcp(port)
  s.end(data)
  return (await readAll(s)).toString()
}

t.test('an allowed caller reaches the app; half-close works; one admit line at open and one close line with bytes', async t => {
  const app = await startCountingApp(t)
  const { b, listenPort } = await startPair(t, { appPort: 6379, appAddress: { host: '127.0.0.1', port: app.port }, policy: tcpPolicy(6379) })
  t.equal(await send(listenPort(), 'PING hello'), 'got 10 bytes', 'the client FIN reached the app, and its reply came back')
  await waitFor(() => b.decisions.some(d => d.kind === 'tcp'), 5000, 'the close line')
  const admit = b.auditLines.find(l => l.msg === 'admit' && l.kind === 'tcp')!
  t.match(admit, { kind: 'tcp', port: 6379, caller: A, callee: B, decision: 'allow', rule: 'cache-clients', policyRevision: /^sha256:/, peerCertSerial: /^[0-9a-f]+$/ }, 'the open line carries the decision')
  const close = b.decisions.find(d => d.kind === 'tcp')!
  t.match(close, { kind: 'tcp', method: 'TCP', port: 6379, decision: 'allow', bytesIn: 10, bytesOut: 12, closeReason: 'closed', requestId: admit.requestId })
  t.ok(close.seq > admit.seq, 'the close line is chained after the open line')
  await stopOnce(b.sidecar)
  const file = join(dir, 'tcp-decisions.log')
  writeFileSync(file, b.auditLines.map(l => JSON.stringify(l)).join('\n') + '\n')
  const verified = await verifyInProcess([file], pki.bundleFile)
  t.equal(verified.status, 0, `audit verify: ${verified.report.verdict}`)
})

t.test('deny: an unauthorized identity, and HTTP rules never authorize TCP (nor TCP rules HTTP)', async t => {
  const app = await startCountingApp(t)
  const httpOnly = `version: 1\nrules:\n  - name: http-all\n    from: ["${A}"]\n`
  const { b, listenPort } = await startPair(t, { appPort: 5432, appAddress: { host: '127.0.0.1', port: app.port }, policy: httpOnly })
  t.equal(await send(listenPort(), 'SELECT 1'), '', 'the connection is closed without an answer')
  t.equal(app.connections, 0, 'not one byte reached the app: it was never dialled')
  await waitFor(() => b.decisions.some(d => d.kind === 'tcp'), 5000, 'the deny line')
  t.match(b.decisions.find(d => d.kind === 'tcp'), { decision: 'deny', reason: 'no-matching-rule', rule: null, port: 5432, caller: A })

  replaceFile(b.policyFile, tcpPolicy(5432))
  await waitFor(() => b.logs.some(l => l.event === 'policy.loaded' && l.trigger === 'file-change'), 5000, 'the TCP-only policy')
  const stranger = await startWorkload(t, { pki, name: 'stranger', id: C, routes: tcpRoutes(b, 5432) })
  t.equal(await send(stranger.sidecar.outbound!.routeListeners.port({ host: '127.0.0.1', port: 0 })!, 'SELECT 1'), '', 'another identity is refused')
  await waitFor(() => b.decisions.some(d => d.kind === 'tcp' && d.caller === C), 5000, 'the stranger\'s deny line')
  t.equal(app.connections, 0)
})

t.test('a TCP rule does not authorize HTTP requests', async t => {
  const echo = await startEchoServer(t)
  const b = await startWorkload(t, { pki, name: 'b-http', id: B, policy: tcpPolicy(echo.port), upstreamPort: echo.port })
  const a = await startWorkload(t, { pki, name: 'a-http', id: A, routes: `version: 1\nroutes:\n  - host: b.internal\n    address: ${b.inboundAddress}\n    id: ${B}\n` })
  const r = await viaProxy(a.outboundPort, 'http://b.internal/x')
  t.equal(r.status, 403, 'HTTP is denied by a policy with only a TCP rule')
  await waitFor(() => b.decisions.length > 0, 5000, 'the deny line')
  t.match(b.decisions[0], { decision: 'deny', reason: 'no-matching-rule', method: 'GET' })
  t.equal(echo.connections, 0)
})

t.test('a policy edit cuts a live connection; the close line says why', async t => {
  const echo = await startEchoServer(t)
  const { b, listenPort } = await startPair(t, { appPort: echo.port, appAddress: { host: '127.0.0.1', port: echo.port }, policy: tcpPolicy(echo.port) })
  const s = await openTcp(listenPort())
  s.write('ping')
  await new Promise(resolve => s.once('data', resolve))
  const closed = readAll(s, 10_000)
  replaceFile(b.policyFile, tcpPolicy(echo.port, [C]))
  await closed
  t.pass('the connection was closed by the sidecar')
  await waitFor(() => b.decisions.some(d => d.kind === 'tcp'), 5000, 'the close line')
  t.match(b.decisions.find(d => d.kind === 'tcp'), { decision: 'allow', closeReason: 'policy-revoked', bytesIn: 4, bytesOut: 4 })
  t.ok(b.logs.some(l => l.event === 'tcp.revoked' && l.caller === A))
})

t.test('idle timeout; an app that is down; backpressure bounds what a slow app makes the sidecars hold', async t => {
  const echo = await startEchoServer(t)
  const idle = await startPair(t, { appPort: echo.port, appAddress: { host: '127.0.0.1', port: echo.port }, policy: tcpPolicy(echo.port), tcpIdleTimeoutMs: 300 })
  const s = await openTcp(idle.listenPort())
  await readAll(s, 5000)
  await waitFor(() => idle.b.decisions.some(d => d.kind === 'tcp'), 5000, 'the close line')
  t.match(idle.b.decisions.find(d => d.kind === 'tcp'), { closeReason: 'idle-timeout' })

  const down = await closedPort()
  const gone = await startPair(t, { appPort: down, appAddress: { host: '127.0.0.1', port: down }, policy: tcpPolicy(down) })
  t.equal(await send(gone.listenPort(), 'x'), '')
  await waitFor(() => gone.b.decisions.some(d => d.kind === 'tcp'), 5000, 'the line')
  t.match(gone.b.decisions.find(d => d.kind === 'tcp'), { decision: 'allow', closeReason: 'app-unavailable', error: /^upstream-unavailable: ECONNREFUSED/ })

  // An app that never reads: the client must be held back, not buffered without bound.
  const stalled = new Set<Socket>()
  const server = createTcpServer(socket => { stalled.add(socket); socket.pause() })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const stallPort = (server.address() as AddressInfo).port
  t.teardown(async () => { for (const x of stalled) x.destroy(); await new Promise(resolve => server.close(resolve)) })
  const slow = await startPair(t, { appPort: stallPort, appAddress: { host: '127.0.0.1', port: stallPort }, policy: tcpPolicy(stallPort) })
  const c = await openTcp(slow.listenPort())
  c.on('error', () => {})
  const chunk = Buffer.alloc(64 * 1024, 7)
  let accepted = 0
  const deadline = Date.now() + 3000
  while (Date.now() < deadline && accepted < 512 * 1024 * 1024) {
    if (c.write(chunk)) { accepted += chunk.length; continue }
    accepted += chunk.length
    const drained = await Promise.race([new Promise(resolve => c.once('drain', () => { resolve(true) })), new Promise(resolve => setTimeout(() => { resolve(false) }, 500))])
    if (drained === false) break
  }
  t.ok(accepted < 64 * 1024 * 1024, `the writer was stopped after ${(accepted / 1048576).toFixed(1)} MiB (socket buffers, not the sidecars' memory)`)
  c.destroy()
})

t.test('routes: tcp and listen are validated; a removed route\'s listener stops accepting and its connection drains', async t => {
  const echo = await startEchoServer(t)
  const { a, listenPort } = await startPair(t, { appPort: echo.port, appAddress: { host: '127.0.0.1', port: echo.port }, policy: tcpPolicy(echo.port) })
  const port = listenPort()
  const live = await openTcp(port)
  live.write('one')
  await new Promise(resolve => live.once('data', resolve))
  replaceFile(a.routesFile!, 'version: 1\nroutes: []\n')
  await waitFor(() => a.logs.some(l => l.event === 'route.listener_closing'), 5000, 'the listener to close')
  await t.rejects(openTcp(port), { code: 'ECONNREFUSED' }, 'no new connections')
  live.write('two')
  const echoed = await new Promise<string>(resolve => live.once('data', (c: Buffer) => { resolve(c.toString()) }))
  t.equal(echoed, 'two', 'the open connection still works')
  live.destroy()

  const bad = `version: 1\nroutes:\n  - host: db.internal\n    protocol: tcp\n    listen: 0.0.0.0:15432\n    address: 10.0.0.9:15006\n    id: ${B}\n  - host: x.internal\n    address: 10.0.0.9:15006\n    id: ${B}\n    port: 80\n`
  replaceFile(a.routesFile!, bad)
  await waitFor(() => a.logs.some(l => l.event === 'routes.reload_failed'), 5000, 'the rejection')
  const problems: string[] = a.logs.find(l => l.event === 'routes.reload_failed')!.problems
  t.match(problems.join('\n'), /listen: 0\.0\.0\.0 is not a loopback address/)
  t.match(problems.join('\n'), /routes\[0\]\.port: a tcp route needs the callee's app port/)
  t.match(problems.join('\n'), /routes\[1\]\.port: only a tcp route names the callee's app port/)
})

t.test('continuous verification: a live connection does not outlive the caller\'s certificate', async t => {
  const echo = await startEchoServer(t)
  const { b, listenPort } = await startPair(t, { appPort: echo.port, appAddress: { host: '127.0.0.1', port: echo.port }, policy: tcpPolicy(echo.port), callerTtlMs: 3000 })
  const s = await openTcp(listenPort())
  s.write('still here')
  await new Promise(resolve => s.once('data', resolve))
  await readAll(s, 10_000)
  await waitFor(() => b.decisions.some(d => d.kind === 'tcp'), 5000, 'the close line')
  t.match(b.decisions.find(d => d.kind === 'tcp'), { decision: 'allow', closeReason: 'peer-certificate-expired', bytesIn: 10 })
})

t.test('an http route with listen: plain HTTP to a local port, no HTTP_PROXY', async t => {
  const app = createTcpServer(socket => { socket.on('error', () => {}); socket.once('data', (c: Buffer) => { const host = /\r\nhost: ([^\r]+)/i.exec(c.toString())?.[1] ?? ''; socket.end(`HTTP/1.1 200 OK\r\ncontent-length: ${host.length}\r\nconnection: close\r\n\r\n${host}`) }) })
  await new Promise<void>(resolve => app.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { await new Promise(resolve => app.close(resolve)) })
  const b = await startWorkload(t, { pki, name: 'b-listen', id: B, allow: [A], upstreamPort: (app.address() as AddressInfo).port })
  const a = await startWorkload(t, { pki, name: 'a-listen', id: A, routes: `version: 1\nroutes:\n  - host: orders.internal\n    listen: 127.0.0.1:0\n    address: ${b.inboundAddress}\n    id: ${B}\n` })
  const port = a.sidecar.outbound!.routeListeners.port({ host: '127.0.0.1', port: 0 })!
  const r = await fetch(`http://127.0.0.1:${port}/v1/orders/7`)
  t.equal(r.status, 200)
  t.equal(await r.text(), 'orders.internal', 'the callee sees the route\'s host, not 127.0.0.1')
  await waitFor(() => b.decisions.length > 0, 5000, 'the decision line')
  t.match(b.decisions[0], { decision: 'allow', method: 'GET', path: '/v1/orders/7', caller: A })
})

t.test('a route listener takes at most --route-max-connections at once', async t => {
  const echo = await startEchoServer(t)
  const b = await startWorkload(t, { pki, name: 'b-max', id: B, policy: tcpPolicy(echo.port), sidecar: { tcpUpstreams: new Map([[echo.port, { host: '127.0.0.1', port: echo.port }]]) } })
  const a = await startWorkload(t, { pki, name: 'a-max', id: A, routes: tcpRoutes(b, echo.port), sidecar: { routeMaxConnections: 1 } })
  const port = a.sidecar.outbound!.routeListeners.port({ host: '127.0.0.1', port: 0 })!
  const first = await openTcp(port)
  first.write('one')
  await new Promise(resolve => first.once('data', resolve))
  const second = await openTcp(port)
  second.write('two')
  t.equal((await readAll(second, 3000)).toString(), '', 'the second connection is closed at once')
  first.write('still')
  t.equal(await new Promise<string>(resolve => first.once('data', (c: Buffer) => { resolve(c.toString()) })), 'still', 'the first one is served')
  first.destroy()
})
