import t from 'tap'
import { networkInterfaces } from 'node:os'
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

/** A non-loopback address of this machine to reach a 0.0.0.0 listener by (IPv4 first; no link-local, which needs a zone). */
function podIpLike (): string | undefined {
  const all = Object.values(networkInterfaces()).flat().filter(a => a !== undefined && !a.internal)
  const pick = all.find(a => a!.family === 'IPv4') ?? all.find(a => a!.family === 'IPv6' && !a!.address.startsWith('fe80:'))
  return pick?.address
}

const POD_IP = podIpLike()

t.test('on 0.0.0.0 the probes answer on every address, /metrics and the rest only on loopback unless exposed', {
  skip: POD_IP === undefined ? 'this machine has no non-loopback address to reach the admin listener by' : false
}, async t => {
  const address = POD_IP!
  const app = await startApp(t, (_req, res) => { res.writeHead(200); res.end() })
  const appProbes = parseAppProbes(JSON.stringify({ '/app-health/web/readyz': { httpGet: { path: '/healthz', port: app.port, scheme: 'HTTP' } } }))
  const registry = new Registry()
  let lastBody = ''
  const start = async (exposeMetrics?: boolean): Promise<(host: string, path: string) => Promise<number>> => {
    const admin = await startAdmin({ listen: { host: '0.0.0.0', port: 0 }, registry, notReady: () => [], appProbes, ...(exposeMetrics === undefined ? {} : { exposeMetrics }) })
    t.teardown(admin.close)
    return async (host, path) => {
      const r = await request(`http://${host.includes(':') ? `[${host}]` : host}:${admin.port}${path}`)
      lastBody = await r.body.text()
      return r.statusCode
    }
  }

  const get = await start()
  for (const path of ['/healthz', '/readyz', '/app-health/web/readyz']) {
    t.equal(await get(address, path), 200, `${path} answers on ${address}, where the kubelet probes`)
    t.equal(await get('127.0.0.1', path), 200, `${path} answers on 127.0.0.1`)
  }
  t.equal(await get(address, '/metrics'), 403, `/metrics is refused on ${address}`)
  t.same(JSON.parse(lastBody), { error: 'GH_LOOPBACK_ONLY', message: 'only the probe paths answer off loopback' }, 'in the one error body')
  t.equal(await get(address, '/nope'), 403, 'as is any other path: off loopback only the probes exist')
  t.equal(await get('127.0.0.1', '/metrics'), 200, '/metrics answers on 127.0.0.1')
  t.equal(await get('127.0.0.1', '/nope'), 404)

  const exposed = await start(true)
  t.equal(await exposed(address, '/metrics'), 200, `with exposeMetrics (--admin-expose-metrics), /metrics answers on ${address}`)
  t.equal(await exposed(address, '/nope'), 403, 'and nothing else is added')
  t.equal(await exposed('127.0.0.1', '/metrics'), 200)
})
