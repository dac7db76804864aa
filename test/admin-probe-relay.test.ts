import t from 'tap'
import { request } from 'undici'
import { Registry } from 'prom-client'
import { startAdmin, parseAppProbes } from '../src/proxy/admin.ts'
import { startApp } from './helpers/mesh.ts'
import { injectPod } from '../src/inject/patch.ts'

t.test('the admin port relays exactly the recorded app probes to the app, and nothing else', async t => {
  let healthy = true
  const app = await startApp(t, (req, res) => {
    if (req.url === '/healthz') { res.writeHead(healthy ? 200 : 500); res.end(); return }
    if (req.url === '/slow') return // never answers
    res.writeHead(200); res.end('app content')
  })
  const probes = parseAppProbes(JSON.stringify({
    '/app-health/web/readyz': { httpGet: { path: '/healthz', port: app.port, scheme: 'HTTP', httpHeaders: [{ name: 'x-probe', value: 'kubelet' }] }, timeoutSeconds: 1 },
    '/app-health/web/livez': { httpGet: { path: '/slow', port: app.port, scheme: 'HTTP' }, timeoutSeconds: 1 }
  }))
  const admin = await startAdmin({ listen: { host: '127.0.0.1', port: 0 }, registry: new Registry(), notReady: () => [], appProbes: probes })
  t.teardown(admin.close)
  const get = async (path: string): Promise<number> => { const r = await request(`http://127.0.0.1:${admin.port}${path}`); await r.body.dump(); return r.statusCode }

  t.equal(await get('/app-health/web/readyz'), 200, 'relayed: the app is healthy')
  t.equal(app.seen.at(-1)?.headers['x-probe'], 'kubelet', 'with the probe\'s own headers')
  healthy = false
  t.equal(await get('/app-health/web/readyz'), 500, 'the app\'s failure is the probe\'s failure')
  t.equal(await get('/app-health/web/livez'), 503, 'an app that does not answer in time fails the probe')
  const seenBefore = app.seen.length
  t.equal(await get('/app-health/web/other'), 404, 'an unrecorded probe path is not relayed')
  t.equal(await get('/app-health/../v1/secrets'), 404)
  t.equal(app.seen.length, seenBefore, 'nothing else reaches the app through the admin port')
  t.same(parseAppProbes(''), {}, 'an empty annotation (no probes) is fine')
  t.throws(() => parseAppProbes('{"/etc/passwd": {"httpGet": {"path": "/", "port": 1}}}'), /is not/)
})

t.test('the injected proxy receives the recorded probes through the downward API', async t => {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', namespace: 'shop', annotations: { 'gatehouse.io/inject': 'enabled' } },
    spec: { containers: [{ name: 'web', image: 'web:1', ports: [{ containerPort: 8080 }], readinessProbe: { httpGet: { path: '/healthz', port: 8080 } } }] }
  }
  const r = injectPod(pod, { namespaceLabels: {} }) as { pod: any }
  const proxy = r.pod.spec.initContainers[0]
  const env = proxy.env.find((e: { name: string }) => e.name === 'GATEHOUSE_APP_PROBES')
  t.same(env?.valueFrom, { fieldRef: { fieldPath: "metadata.annotations['gatehouse.io/app-probes']" } })
  const recorded = parseAppProbes(r.pod.metadata.annotations['gatehouse.io/app-probes'])
  t.same(Object.keys(recorded), ['/app-health/web/readyz'])
  t.equal(r.pod.spec.containers[0].readinessProbe.httpGet.path, '/app-health/web/readyz')
})
