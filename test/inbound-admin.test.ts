import t from 'tap'
import { writeFileSync, renameSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { startMesh, DEFAULT_POLICY } from './helpers/mesh.ts'
import { adminGet, scrapeMetrics, metricValue } from './helpers/inbound-probe.ts'
import { waitFor } from './helpers/wait.ts'

// The admin listener: liveness, honest readiness (a sidecar that can only deny or fail is not ready),
// and Prometheus metrics that say what the inbound path decided.

const CALLER = 'spiffe://example.org/ns/client/sa/caller'

function replaceFile (path: string, content: string): void {
  writeFileSync(`${path}.tmp`, content)
  renameSync(`${path}.tmp`, path)
}

async function adminMethod (port: number, method: string, path: string): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method, agent: false }, (res) => { res.resume(); res.on('end', () => { resolve(res.statusCode ?? 0) }) })
    req.on('error', reject)
    req.end()
  })
}

t.test('/healthz and /readyz answer 200 on a sidecar with identity and policy; other paths and methods are refused', async t => {
  const mesh = await startMesh(t)
  const health = await adminGet(mesh, '/healthz')
  t.equal(health.status, 200)
  t.same(JSON.parse(health.body), { status: 'ok' })
  const ready = await adminGet(mesh, '/readyz')
  t.equal(ready.status, 200)
  t.same(JSON.parse(ready.body), { status: 'ready' })
  t.match(ready.contentType, /^application\/json/)
  t.equal((await adminGet(mesh, '/readyz?verbose=1')).status, 200, 'a query string does not change the route')
  const nope = await adminGet(mesh, '/nope')
  t.equal(nope.status, 404)
  t.match(JSON.parse(nope.body), { error: 'GH_NOT_FOUND', message: String }, 'the one error body')
  t.equal(await adminMethod(mesh.sidecar.admin.port, 'POST', '/healthz'), 405)
  t.equal(await adminMethod(mesh.sidecar.admin.port, 'HEAD', '/healthz'), 200)
  const listening = mesh.logs.find(l => l.event === 'admin.listening')
  t.same(listening === undefined ? undefined : { host: listening.host, port: listening.port }, { host: '127.0.0.1', port: mesh.sidecar.admin.port }, 'the log says where the admin port listens, as for the other listeners')
})

t.test('an invalid policy at start: the sidecar starts, is not ready, and answers every request 503 without reaching the app', async t => {
  const mesh = await startMesh(t, { policy: 'version: 1\nrules:\n  - name: broken\n    from: ["not-a-spiffe-id"]\n' })
  t.equal(mesh.sidecar.policy.current, undefined, 'no policy loaded')
  t.equal((await adminGet(mesh, '/healthz')).status, 200, 'alive')
  const ready = await adminGet(mesh, '/readyz')
  t.equal(ready.status, 503, 'not ready')
  t.same(JSON.parse(ready.body), { status: 'not-ready', reasons: ['no valid policy loaded'] })
  t.match(mesh.logs.find(l => l.event === 'policy.reload_failed'), { level: 50, trigger: 'start', code: 'GH_POLICY_INVALID', keptRevision: null }, 'why, in the log')

  for (const [method, path] of [['GET', '/v1/items'], ['POST', '/v1/items'], ['GET', '/']] as const) {
    const res = await mesh.request(path, { method, ...(method === 'POST' ? { body: '{}' } : {}) })
    t.equal(res.status, 503, `${method} ${path}: 503`)
    t.match(JSON.parse(res.body), { error: 'GH_NOT_READY', message: /no policy/, requestId: String }, `${method} ${path}: JSON error body`)
  }
  t.equal(mesh.app.seen.length, 0, 'nothing reached the app')
  t.equal(mesh.decisions.length, 3, 'every refusal has a decision line')
  t.match(mesh.decisions[0], { decision: 'deny', caller: CALLER, status: 503, policyRevision: null, reason: /^not-ready/ })
  const text = await scrapeMetrics(mesh)
  t.equal(metricValue(text, 'gatehouse_policy_reloads_total', { result: 'invalid' }), 1, 'the failed load is counted')
  t.equal(metricValue(text, 'gatehouse_policy_reloads_total', { result: 'success' }), 0)

  // A fixed file is picked up without a restart.
  replaceFile(mesh.policyFile, DEFAULT_POLICY)
  await waitFor(() => mesh.sidecar.policy.current !== undefined, 5000, 'the fixed policy to load')
  const nowReady = await adminGet(mesh, '/readyz')
  t.equal(nowReady.status, 200, 'ready once a valid policy is loaded')
  t.equal((await mesh.request('/v1/items')).status, 200, 'and requests are served')
  t.equal(mesh.app.seen.length, 1)
})

t.test('/readyz says 503 when the workload certificate has expired', async t => {
  const mesh = await startMesh(t)
  const short = mesh.pki.issue('/ns/server/sa/payments', 'server-short', 2000)
  writeFileSync(`${mesh.server.key}.tmp`, short.keyPem)
  writeFileSync(`${mesh.server.cert}.tmp`, short.chainPem)
  renameSync(`${mesh.server.key}.tmp`, mesh.server.key)
  renameSync(`${mesh.server.cert}.tmp`, mesh.server.cert)
  const notAfter = mesh.sidecar.credentials.current!.notAfter
  await waitFor(() => mesh.sidecar.credentials.current!.notAfter.getTime() !== notAfter.getTime(), 5000, 'the short-lived certificate to load')
  const expires = mesh.sidecar.credentials.current!.notAfter.getTime()
  await new Promise(resolve => setTimeout(resolve, Math.max(0, expires + 200 - Date.now()))) // until the short-lived certificate has expired
  const ready = await adminGet(mesh, '/readyz')
  t.equal(ready.status, 503)
  t.same(JSON.parse(ready.body), { status: 'not-ready', reasons: ['no valid workload certificate'] })
  t.equal((await adminGet(mesh, '/healthz')).status, 200, 'still alive')
})

t.test('/metrics is Prometheus text with gatehouse_requests_total by decision and rule', async t => {
  const mesh = await startMesh(t, {
    policy: `version: 1
rules:
  - name: caller-reads
    from: ["${CALLER}"]
    methods: [GET]
deny:
  - name: no-admin
    from: ["${CALLER}"]
    paths: ["/admin/**"]
`
  })
  t.equal((await mesh.request('/v1/a')).status, 200)
  t.equal((await mesh.request('/v1/b')).status, 200)
  t.equal((await mesh.request('/v1/a', { method: 'POST', body: 'x' })).status, 403)
  t.equal((await mesh.request('/admin/users')).status, 403)

  const res = await adminGet(mesh, '/metrics')
  t.equal(res.status, 200)
  t.match(res.contentType, /^text\/plain; version=0\.0\.4/, 'Prometheus text exposition format')
  const text = res.body
  t.match(text, /^# HELP gatehouse_requests_total .+$/m)
  t.match(text, /^# TYPE gatehouse_requests_total counter$/m)
  t.equal(metricValue(text, 'gatehouse_requests_total', { decision: 'allow', rule: 'caller-reads', mode: 'enforce' }), 2, 'allowed, by rule')
  t.equal(metricValue(text, 'gatehouse_requests_total', { decision: 'deny', rule: '', mode: 'enforce' }), 1, 'default deny: empty rule label')
  t.equal(metricValue(text, 'gatehouse_requests_total', { decision: 'deny', rule: 'no-admin' }), 1, 'denied by a deny rule')
  t.equal(metricValue(text, 'gatehouse_requests_total'), 4, 'one count per request')
  t.equal(metricValue(text, 'gatehouse_request_duration_seconds_count', { decision: 'allow' }), 2, 'duration histogram by decision')
  t.equal(metricValue(text, 'gatehouse_request_duration_seconds_count', { decision: 'deny' }), 2)
  t.equal(metricValue(text, 'gatehouse_policy_reloads_total', { result: 'success' }), 1)
  t.match(text, /^gatehouse_process_\w+/m, 'process metrics are prefixed')
  // Every sample line is well formed: name{labels} value.
  const bad = text.split('\n').filter(l => l !== '' && !l.startsWith('#') && !/^[a-zA-Z_:][\w:]*(\{[^}]*\})? \S+$/.test(l))
  t.same(bad, [], 'every sample line parses')
})
