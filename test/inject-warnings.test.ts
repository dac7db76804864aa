import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { readCorpusJson } from './helpers/corpora.ts'
import { startInjector } from './helpers/injector.ts'
import { gatehouse } from './helpers/run-cli.ts'
import { tempDir } from './helpers/files.ts'

// Safer injection (issue 20, item 5). The webhook answers with AdmissionReview `warnings` when an
// injected app may be reachable at the pod IP around its sidecar (src/inject/admission.ts,
// bypassWarnings: an all-interfaces address in its command/args/env, a tcpSocket or grpc probe, or a
// containerPort with no sign of 127.0.0.1). `gatehouse inject` (offline) prints the same, and also
// warns when a workload's policy ConfigMap is not in the manifest set, which the webhook, seeing one
// pod at a time, cannot know. Warnings never change the exit status or block a pod.

/* eslint-disable @typescript-eslint/no-explicit-any */

const review = (uid: string, pod: Record<string, any>): Record<string, any> => ({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: {
    uid,
    kind: { group: '', version: 'v1', kind: 'Pod' },
    resource: { group: '', version: 'v1', resource: 'pods' },
    requestKind: { group: '', version: 'v1', kind: 'Pod' },
    requestResource: { group: '', version: 'v1', resource: 'pods' },
    namespace: 'shop',
    operation: 'CREATE',
    userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller', uid: 'a1b2', groups: ['system:serviceaccounts', 'system:authenticated'] },
    object: { apiVersion: 'v1', kind: 'Pod', metadata: { name: uid, namespace: 'shop', annotations: { 'gatehouse.io/inject': 'enabled', ...pod.annotations } }, spec: { serviceAccountName: 'web', containers: pod.containers } },
    oldObject: null,
    dryRun: false,
    options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' }
  }
})

const BYPASS = /the pod IP reaches it around the sidecar; make it listen on 127\.0\.0\.1 only, or annotate the pod gatehouse\.io\/capture: iptables|unless that is 127\.0\.0\.1 the pod IP reaches it around the sidecar/

t.test('webhook: warnings for apps that may listen beyond loopback', async t => {
  const injector = await startInjector(t)
  const cases: Array<[string, Record<string, any>, RegExp[]]> = [
    ['told 0.0.0.0 in args', { containers: [{ name: 'api', image: 'api:1', args: ['--listen=0.0.0.0:8080'], ports: [{ containerPort: 8080 }] }] }, [/^gatehouse: container api is told to listen on every interface \(args: "--listen=0\.0\.0\.0:8080"\)/]],
    ['told :: in env', { containers: [{ name: 'api', image: 'api:1', env: [{ name: 'BIND', value: '[::]:9000' }] }] }, [/container api is told to listen on every interface \(env BIND: "\[::\]:9000"\)/]],
    ['Go-style :PORT', { containers: [{ name: 'mgr', image: 'mgr:1', command: ['/manager', '--health-probe-bind-address=:8081'] }] }, [/container mgr is told to listen on every interface/]],
    ['a tcpSocket probe', { containers: [{ name: 'db', image: 'db:1', readinessProbe: { tcpSocket: { port: 5432 } } }] }, [/container db has a tcpSocket readinessProbe, which the kubelet sends to the pod IP/]],
    ['a port, nothing said', { containers: [{ name: 'web', image: 'nginx:1.27', ports: [{ containerPort: 80 }, { containerPort: 443 }] }] }, [/^gatehouse: container web declares port 80, 443; Kubernetes cannot tell which address it listens on/]],
    ['two containers, one each', { containers: [{ name: 'a', image: 'a:1', ports: [{ containerPort: 80 }] }, { name: 'b', image: 'b:1', args: ['--addr', '0.0.0.0'] }] }, [/container a declares port 80/, /container b is told to listen on every interface/]]
  ]
  for (const [name, pod, expected] of cases) {
    const res = await injector.post('/mutate', review(name.replace(/\W+/g, '-'), pod))
    t.equal(res.status, 200, `${name}: answered`)
    t.equal(res.json.response.allowed, true, `${name}: allowed`)
    t.equal(res.json.response.patchType, 'JSONPatch', `${name}: still injected`)
    t.equal(res.json.response.warnings?.length, expected.length, `${name}: ${expected.length} warning(s)`)
    expected.forEach((re, i) => { t.match(res.json.response.warnings?.[i], re, `${name}: warning ${i + 1}`) })
    for (const w of res.json.response.warnings ?? []) t.match(w, BYPASS, `${name}: says what to do`)
  }

  const quiet: Array<[string, Record<string, any>]> = [
    ['bound to 127.0.0.1', { containers: [{ name: 'api', image: 'api:1', args: ['--listen', '127.0.0.1:8080'], ports: [{ containerPort: 8080 }] }] }],
    ['bound to localhost in env', { containers: [{ name: 'api', image: 'api:1', env: [{ name: 'HOST', value: 'localhost' }], ports: [{ containerPort: 8080 }] }] }],
    ['no port, no address', { containers: [{ name: 'worker', image: 'worker:1' }] }],
    ['an HTTP probe (relayed by the sidecar)', { containers: [{ name: 'api', image: 'api:1', args: ['--host=127.0.0.1'], ports: [{ containerPort: 8080 }], readinessProbe: { httpGet: { path: '/ready', port: 8080 } } }] }],
    ['0.0.0.0/0 is a CIDR, not a bind', { containers: [{ name: 'fw', image: 'fw:1', args: ['--allow=0.0.0.0/0'] }] }],
    ['capture: iptables', { annotations: { 'gatehouse.io/capture': 'iptables' }, containers: [{ name: 'web', image: 'nginx:1.27', args: ['--listen=0.0.0.0:80'], ports: [{ containerPort: 80 }] }] }]
  ]
  for (const [name, pod] of quiet) {
    const res = await injector.post('/mutate', review(name.replace(/\W+/g, '-'), pod))
    t.equal(res.json.response.patchType, 'JSONPatch', `${name}: injected`)
    t.notOk(res.json.response.warnings, `${name}: no warning`)
  }

  // Pods that are not injected are not second-guessed.
  const skipped = await injector.post('/mutate', review('disabled', { annotations: { 'gatehouse.io/inject': 'disabled' }, containers: [{ name: 'web', image: 'nginx', ports: [{ containerPort: 80 }] }] }))
  t.notOk(skipped.json.response.warnings, 'not injected: no bypass warning')

  // Every warning is counted (gatehouse_injector_warnings_total) and logged with the decision.
  const warned = cases.reduce((n, [, , e]) => n + e.length, 0)
  t.equal((await injector.running.metrics.warnings.get()).values[0]?.value, warned, 'gatehouse_injector_warnings_total')
  t.ok(injector.logs.some(l => l.event === 'inject.decision' && l.warnings?.some((w: string) => /declares port 80, 443/.test(w))), 'in the inject.decision line')
})

t.test('webhook: a real ReplicaSet-created pod (corpus) that binds 0.0.0.0', async t => {
  const injector = await startInjector(t)
  const corpus = readCorpusJson('admission-review', 'replicaset-pod-generatename.json')
  corpus.request.object.metadata.annotations = { ...corpus.request.object.metadata.annotations, 'gatehouse.io/inject': 'enabled' }
  const res = await injector.post('/mutate', corpus)
  t.equal(res.json.response.uid, corpus.request.uid)
  t.equal(res.json.response.patchType, 'JSONPatch')
  t.match(res.json.response.warnings, [/container kube-rbac-proxy is told to listen on every interface \(args: "--secure-listen-address=0\.0\.0\.0:8443"\)/, /container manager is told to listen on every interface \(args: "--health-probe-bind-address=:8081"\)/])
  t.equal(res.json.response.warnings.length, 2)
})

t.test('offline: gatehouse inject warns on stderr, exit 0, output unchanged', async t => {
  const dir = tempDir(t, 'gh-inject-warn-')
  const deployment = (name: string, namespace: string | undefined, container: Record<string, any>, extra: Record<string, string> = {}): Record<string, any> => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, ...(namespace === undefined ? {} : { namespace }) },
    spec: { selector: { matchLabels: { app: name } }, template: { metadata: { labels: { app: name }, annotations: { 'gatehouse.io/inject': 'enabled', ...extra } }, spec: { serviceAccountName: name, containers: [container] } } }
  })
  const policy = (name: string, namespace?: string): Record<string, any> => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, ...(namespace === undefined ? {} : { namespace }) }, data: { 'policy.yaml': 'version: 1\nrules: []\n' } })
  const loopback = { name: 'app', image: 'app:1', args: ['--listen=127.0.0.1:8080'], ports: [{ containerPort: 8080 }] }
  const run = (docs: Array<Record<string, any>>, extra: string[] = []): { status: number | null, stdout: string, stderr: string, warnings: string[] } => {
    const file = join(dir, `m${Math.random().toString(36).slice(2)}.yaml`)
    writeFileSync(file, docs.map(d => stringify(d)).join('---\n'))
    const r = gatehouse(['inject', '-f', file, '--namespace-labels=', ...extra])
    return { ...r, warnings: r.stderr.split('\n').filter(l => l.startsWith('gatehouse inject: warning: ')) }
  }

  const complete = run([deployment('web', 'shop', loopback), policy('web-gatehouse-policy', 'shop')])
  t.equal(complete.status, 0)
  t.same(complete.warnings, [], 'policy present, app on loopback: no warning')

  const missing = run([deployment('web', 'shop', loopback)])
  t.equal(missing.status, 0, 'a warning is not an error')
  t.match(missing.stdout, /name: gatehouse-proxy/, 'still injected and printed')
  t.same(missing.warnings, ['gatehouse inject: warning: deployment/web: policy ConfigMap web-gatehouse-policy (key policy.yaml) is not in this manifest set: the pod stays in ContainerCreating until it exists in namespace shop (create it, or name another with gatehouse.io/policy; the webhook cannot check this)'])

  const elsewhere = run([deployment('web', 'shop', loopback), policy('web-gatehouse-policy', 'other')])
  t.match(elsewhere.warnings, [/policy ConfigMap web-gatehouse-policy .* namespace shop/], 'a ConfigMap of that name in another namespace does not count')

  const named = run([deployment('web', undefined, loopback, { 'gatehouse.io/policy': 'shared-policy' }), policy('shared-policy')])
  t.same(named.warnings, [], 'the gatehouse.io/policy annotation names the ConfigMap; no namespaces: kubectl -n puts both in one')

  const inList = run([{ apiVersion: 'v1', kind: 'List', items: [deployment('web', 'shop', loopback), policy('web-gatehouse-policy', 'shop')] }])
  t.same(inList.warnings, [], 'ConfigMaps inside a List count')

  const both = run([deployment('web', 'shop', { name: 'app', image: 'nginx:1.27', ports: [{ containerPort: 80 }] })])
  t.equal(both.status, 0)
  t.match(both.warnings, [
    /^gatehouse inject: warning: deployment\/web: container app declares port 80; Kubernetes cannot tell/,
    /^gatehouse inject: warning: deployment\/web: policy ConfigMap web-gatehouse-policy/
  ], 'the bypass warning, then the missing policy')
  t.notMatch(both.stdout, /warning/, 'warnings never reach stdout (it goes to kubectl apply)')

  const notInjected = run([deployment('web', 'shop', { name: 'app', image: 'nginx', ports: [{ containerPort: 80 }] }, { 'gatehouse.io/inject': 'disabled' })])
  t.same(notInjected.warnings, [], 'an object left alone gets neither warning')

  const captured = run([deployment('web', 'shop', { name: 'app', image: 'nginx', ports: [{ containerPort: 80 }] }, { 'gatehouse.io/capture': 'iptables' }), policy('web-gatehouse-policy', 'shop')])
  t.same(captured.warnings, [], 'with capture, binding every interface is fine')
})
