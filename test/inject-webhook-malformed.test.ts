import t from 'tap'
import { startInjector } from './helpers/injector.ts'

// The webhook never stands in the way of a pod: whatever it is sent, a readable review gets
// "allowed" (with a warning when something was wrong), and nothing gets a 5xx. Only HTTP-level
// misuse (path, method, media type, size) is refused, with a 4xx and a stable code.

const podReview = (object: unknown, request: Record<string, unknown> = {}): any => ({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: { uid: 'uid-1', kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, namespace: 'shop', operation: 'CREATE', object, ...request }
})
const optedIn = (spec: unknown, annotations: Record<string, string> = {}): any => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', annotations: { 'gatehouse.io/inject': 'enabled', ...annotations } }, spec })
const app = { containers: [{ name: 'app', image: 'app:1' }] }
const decode = (b64: string): any[] => JSON.parse(Buffer.from(b64, 'base64').toString('utf8'))

t.test('reviews it cannot use: allowed, unchanged, with a warning', async t => {
  const injector = await startInjector(t)
  const cases: Array<[string, unknown, string, RegExp]> = [
    ['not JSON', '{"apiVersion": ', '', /not an AdmissionReview object/],
    ['a JSON array', [], '', /not an AdmissionReview object/],
    ['AdmissionReview v1beta1', { ...podReview(optedIn(app)), apiVersion: 'admission.k8s.io/v1beta1' }, 'uid-1', /expected apiVersion admission\.k8s\.io\/v1/],
    ['no request', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }, '', /no request\.uid/],
    ['no uid', podReview(optedIn(app), { uid: undefined }), '', /no request\.uid/],
    ['no object', podReview(undefined), 'uid-1', /no request\.object/],
    ['opted-in pod without containers', podReview(optedIn({ containers: 'nope' })), 'uid-1', /spec\.containers must be a non-empty list/],
    ['opted-in pod with a nameless container', podReview(optedIn({ containers: [{ image: 'x' }] })), 'uid-1', /spec\.containers\[0\] must be an object with a name/]
  ]
  for (const [name, body, uid, warning] of cases) {
    const res = await injector.post('/mutate', body)
    t.equal(res.status, 200, `${name}: HTTP 200`)
    t.equal(res.json.response.allowed, true, `${name}: allowed`)
    t.equal(res.json.response.uid, uid, `${name}: uid ${uid === '' ? 'empty (none to echo)' : 'echoed'}`)
    t.notOk(res.json.response.patch, `${name}: no patch`)
    t.match(res.json.response.warnings, [warning], `${name}: warning`)
  }
})

t.test('requests that are not pod creation: allowed, no patch, no warning', async t => {
  const injector = await startInjector(t)
  const cases: Array<[string, unknown]> = [
    ['a Deployment', podReview(optedIn(app), { kind: { group: 'apps', version: 'v1', kind: 'Deployment' }, resource: { group: 'apps', version: 'v1', resource: 'deployments' } })],
    ['a pod UPDATE', podReview(optedIn(app), { operation: 'UPDATE' })],
    ['an ephemeral container sub-resource', podReview(optedIn(app), { subResource: 'ephemeralcontainers' })]
  ]
  for (const [name, body] of cases) {
    const res = await injector.post('/mutate', body)
    t.same(res.json.response, { uid: 'uid-1', allowed: true }, name)
  }
})

t.test('opted-in pods the injector refuses: allowed, the reason recorded on the pod and returned as a warning', async t => {
  const injector = await startInjector(t)
  const res = await injector.post('/mutate', podReview(optedIn(app, {
    'gatehouse.io/upstream-port': 'http',
    'gatehouse.io/proxy-cpu-request': '2',
    'gatehouse.io/proxy-memory-limit': 'lots',
    'gatehouse.io/policy': 'Not_A_Name'
  })))
  t.equal(res.json.response.allowed, true)
  const ops = decode(res.json.response.patch)
  t.equal(ops.length, 1, 'a single op')
  t.equal(ops[0].path, '/metadata/annotations/gatehouse.io~1skip-reason', 'RFC 6901 escaping of the annotation key')
  const reason: string = ops[0].value
  for (const part of [/gatehouse\.io\/upstream-port must be a port number/, /Not_A_Name.* is not a valid ConfigMap name/, /gatehouse\.io\/proxy-memory-limit must be a Kubernetes quantity/, /proxy cpu request 2 is above its limit 1/]) t.match(reason, part, 'every problem named at once')
  t.same(res.json.response.warnings, [`gatehouse: not injected: ${reason}`])

  const ports = await injector.post('/mutate', podReview(optedIn({ containers: [{ name: 'app', image: 'a', ports: [{ containerPort: 15020 }] }] })))
  t.match(decode(ports.json.response.patch), [{ op: 'add', path: '/metadata/annotations/gatehouse.io~1skip-reason', value: /container app uses port 15020, which the proxy needs/ }], 'a port the proxy needs')
})

t.test('an app that sets its own proxy env keeps it, and is told', async t => {
  const injector = await startInjector(t)
  const res = await injector.post('/mutate', podReview(optedIn({ containers: [{ name: 'app', image: 'a', env: [{ name: 'http_proxy', value: 'http://corp:3128' }] }] })))
  t.equal(res.json.response.patchType, 'JSONPatch', 'still injected')
  t.same(res.json.response.warnings, ['gatehouse: container app already sets http_proxy; kept, and HTTP_PROXY/http_proxy not added'])
  const envOps = decode(res.json.response.patch).filter(o => o.path.startsWith('/spec/containers/0/env'))
  t.same(envOps.map(o => o.value.name), ['NO_PROXY', 'no_proxy'])
})

t.test('HTTP-level misuse gets a 4xx with a stable code; nothing gets a 5xx', async t => {
  const injector = await startInjector(t, { maxBodyBytes: 4096 })
  t.same(await injector.get('/healthz').then(r => [r.status, r.json]), [200, { status: 'ok' }])
  const cases: Array<[string, () => Promise<{ status: number, json: any }>, number, string]> = [
    ['GET /mutate', async () => await injector.get('/mutate'), 405, 'GH_METHOD_NOT_ALLOWED'],
    ['POST /elsewhere', async () => await injector.post('/elsewhere', podReview(optedIn(app))), 404, 'GH_NOT_FOUND'],
    ['text/plain', async () => await injector.post('/mutate', podReview(optedIn(app)), { 'content-type': 'text/plain' }), 415, 'GH_UNSUPPORTED_MEDIA_TYPE'],
    ['a body over the limit', async () => await injector.post('/mutate', podReview(optedIn(app, { big: 'x'.repeat(8192) }))), 413, 'GH_BODY_TOO_LARGE']
  ]
  for (const [name, call, status, code] of cases) {
    const res = await call()
    t.equal(res.status, status, `${name}: ${status}`)
    t.equal(res.json.error, code, `${name}: ${code}`)
  }
  const ok = await injector.post('/mutate', podReview(optedIn(app)))
  t.equal(ok.status, 200, 'the server still answers after all that')
  t.equal(ok.json.response.patchType, 'JSONPatch')
  t.equal(injector.logs.filter(l => l.level >= 50).length, 0, 'no error logged')
})
