import t from 'tap'
import fjp from 'fast-json-patch'
import { injectPod as injectPodTyped, type InjectOptions, type InjectResult } from '../src/inject/patch.ts'
import { injectorConfig } from '../src/inject/injector-config.ts'
import { proxySchema } from '../src/cli/proxy.ts'

// The app's HTTP probes are pointed at the proxy's admin port, /app-health/<container>/<probe>, and
// the originals are recorded in the gatehouse.io/app-probes annotation for the admin relay. Only the
// httpGet target changes; probes that are not plain HTTP to this pod are left alone.

const ON = { 'gatehouse.io/inject': 'enabled' }
/** The pure function, with the pod typed loosely for reading in assertions. */
const injectPod = (pod: unknown, opts: InjectOptions): InjectResult & { pod: any } => injectPodTyped(pod, opts)
const pod = (): any => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'api', annotations: { 'gatehouse.io/inject': 'enabled' } },
  spec: {
    containers: [
      {
        name: 'api',
        image: 'api:1',
        ports: [{ name: 'http', containerPort: 8080 }, { name: 'health', containerPort: 8081 }],
        livenessProbe: { httpGet: { path: '/livez?full=1', port: 8081, scheme: 'HTTP', httpHeaders: [{ name: 'X-Probe', value: 'kubelet' }] }, initialDelaySeconds: 15, periodSeconds: 20, timeoutSeconds: 3, failureThreshold: 4 },
        readinessProbe: { httpGet: { path: '/ready', port: 'health' }, periodSeconds: 5 },
        startupProbe: { httpGet: { port: '8080', host: 'localhost' }, failureThreshold: 30 }
      },
      {
        name: 'worker',
        image: 'worker:1',
        livenessProbe: { exec: { command: ['true'] } },
        readinessProbe: { tcpSocket: { port: 9000 } },
        startupProbe: { grpc: { port: 9001 } }
      },
      {
        name: 'odd',
        image: 'odd:1',
        livenessProbe: { httpGet: { path: '/tls', port: 8443, scheme: 'HTTPS' } },
        readinessProbe: { httpGet: { path: '/elsewhere', port: 80, host: '10.0.0.9' } },
        startupProbe: { httpGet: { path: '/named', port: 'nope' } }
      }
    ]
  }
})

t.test('HTTP probes of app containers go to the admin port; the originals are recorded', async t => {
  const input = pod()
  const r = injectPod(input, {})
  t.equal(r.injected, true)
  const [api, worker, odd] = r.pod.spec.containers
  t.same(api.livenessProbe, { httpGet: { path: '/app-health/api/livez', port: 15020, scheme: 'HTTP' }, initialDelaySeconds: 15, periodSeconds: 20, timeoutSeconds: 3, failureThreshold: 4 }, 'liveness: target rewritten, timings kept')
  t.same(api.readinessProbe, { httpGet: { path: '/app-health/api/readyz', port: 15020, scheme: 'HTTP' }, periodSeconds: 5 }, 'readiness (named port)')
  t.same(api.startupProbe, { httpGet: { path: '/app-health/api/startupz', port: 15020, scheme: 'HTTP' }, failureThreshold: 30 }, 'startup (numeric-string port, localhost host)')

  const recorded = JSON.parse(r.pod.metadata.annotations['gatehouse.io/app-probes'])
  t.same(recorded, {
    '/app-health/api/livez': { httpGet: { path: '/livez?full=1', port: 8081, scheme: 'HTTP', httpHeaders: [{ name: 'X-Probe', value: 'kubelet' }] }, timeoutSeconds: 3 },
    '/app-health/api/readyz': { httpGet: { path: '/ready', port: 8081, scheme: 'HTTP' }, timeoutSeconds: 1 },
    '/app-health/api/startupz': { httpGet: { path: '/', port: 8080, scheme: 'HTTP', host: 'localhost' }, timeoutSeconds: 1 }
  }, 'exact originals: path with query, resolved port, headers, the probe timeout; "/" when no path')

  t.same(worker, { ...input.spec.containers[1], env: worker.env }, 'exec, tcpSocket and grpc probes untouched')
  t.same([odd.livenessProbe, odd.readinessProbe, odd.startupProbe], [input.spec.containers[2].livenessProbe, input.spec.containers[2].readinessProbe, input.spec.containers[2].startupProbe], 'HTTPS, other-host and unresolvable probes untouched')
  t.same(r.warnings, [
    'gatehouse: container odd livenessProbe uses HTTPS; left unchanged (the admin relay speaks plain HTTP)',
    'gatehouse: container odd startupProbe port "nope" does not resolve to a port number; left unchanged'
  ], 'the owner is told which probes were left as they were (a probe of another host is not ours to relay)')
  t.notOk(Object.keys(recorded).some(k => k.startsWith('/app-health/odd/') || k.startsWith('/app-health/worker/')), 'nothing recorded for probes left alone')

  const patched = fjp.applyPatch(structuredClone(input), r.patch as fjp.Operation[], true, false).newDocument
  t.same(patched, r.pod, 'the JSON patch does exactly the same')
  t.same(r.patch.filter(o => o.path.includes('Probe')).map(o => [o.op, o.path]), [
    ['replace', '/spec/containers/0/livenessProbe/httpGet'],
    ['replace', '/spec/containers/0/readinessProbe/httpGet'],
    ['replace', '/spec/containers/0/startupProbe/httpGet']
  ], 'one replace per rewritten probe, of its httpGet only')
})

t.test('the proxy\'s own probes gate the app on its readiness', async t => {
  const proxy = injectPod(pod(), {}).pod.spec.initContainers[0]
  t.same(proxy.startupProbe.httpGet, { path: '/readyz', port: 15020, scheme: 'HTTP' }, 'startupProbe on /readyz: app containers start once it passes')
  t.same(proxy.readinessProbe.httpGet, { path: '/readyz', port: 15020, scheme: 'HTTP' })
  t.same(proxy.livenessProbe.httpGet, { path: '/healthz', port: 15020, scheme: 'HTTP' })
  t.ok(proxy.args.includes('--admin') && proxy.args[proxy.args.indexOf('--admin') + 1] === '0.0.0.0:15020', 'admin listens on the pod IP, where the kubelet probes')
  t.notOk(proxy.args.includes('--admin-expose-metrics'), 'only the probes answer there: /metrics stays on loopback by default')
  const exposed = injectPod(pod(), { config: injectorConfig({ exposeMetrics: true }) }).pod.spec.initContainers[0]
  t.ok(exposed.args.includes('--admin-expose-metrics'), 'unless the injector is told to expose metrics (--proxy-expose-metrics)')
  t.ok('admin-expose-metrics' in proxySchema, 'a real flag of gatehouse proxy')
})

t.test('another admin port moves the rewritten probes with it', async t => {
  const r = injectPod(pod(), { config: injectorConfig({ adminPort: 16020 }) })
  t.equal(r.pod.spec.containers[0].livenessProbe.httpGet.port, 16020)
  t.equal(r.pod.spec.initContainers[0].startupProbe.httpGet.port, 16020)
})

t.test('no HTTP probes: no annotation', async t => {
  const p = pod()
  p.spec.containers = [p.spec.containers[1]]
  const r = injectPod(p, { namespaceLabels: ON })
  t.equal(r.injected, true)
  t.notOk('gatehouse.io/app-probes' in r.pod.metadata.annotations)
})

t.test('probes are rewritten once: a second injection changes nothing', async t => {
  const first = injectPod(pod(), {})
  const second = injectPod(first.pod, {})
  t.match(second, { injected: false, reason: 'already-injected', patch: [] })
  t.same(second.pod, first.pod)
})
