import t from 'tap'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { Pki } from './helpers/mesh.ts'
import { tempDir } from './helpers/files.ts'
import { waitFor } from './helpers/wait.ts'
import { startCaFixture, joinToken, keyAndCsr, postSvid } from './helpers/ca-fixture.ts'
import { startFakeKubeApi, injectorWebhook, type FakeKubeApi } from './helpers/kube-api.ts'
import { startProcess } from './helpers/process.ts'
import { cliPath, gatehouse } from './helpers/run-cli.ts'
import { KubeClient, inClusterConfig } from '../src/k8s/api-client.ts'
import { rotateRoot } from '../src/ca/root-rotation.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { loadCa } from '../src/ca/ca-directory.ts'

// The CA keeps the trust bundle where the cluster needs it (bundle-publisher.ts): a ConfigMap in its
// own namespace and in each labelled namespace, and the caBundle of the injector's webhooks. Against
// a stand-in API server that answers with kube-apiserver's shapes (helpers/kube-api.ts), through the
// real HTTP client and its bearer-token authentication from a service-account directory; then a root
// rotation republishes everywhere, failures (RBAC, conflicts, an API server that is down) leave what
// was published and recover, and `ca serve` wires it from its flags. Also `--dns-san`: the injector's
// SVID carries the webhook's DNS name.

const pki = new Pki(tempDir(t, 'gh-pub-pki-'))

async function cluster (): Promise<FakeKubeApi> {
  const api = await startFakeKubeApi(t, pki)
  api.namespaces.set('gatehouse-system', {})
  api.namespaces.set('shop', { 'gatehouse.io/inject': 'enabled' })
  api.namespaces.set('billing', { 'gatehouse.io/trust-bundle': 'enabled' })
  api.namespaces.set('unrelated', { team: 'x' })
  api.webhooks.set('gatehouse-injector', injectorWebhook())
  return api
}

function client (api: FakeKubeApi): KubeClient {
  const config = inClusterConfig({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) }, api.saDir)!
  const c = new KubeClient(config, { timeoutMs: 2000 })
  t.teardown(async () => { await c.close() })
  return c
}

const publisherFor = (api: FakeKubeApi, o: { intervalMs?: number, publishConfigMaps?: boolean } = {}) => ({
  client: client(api),
  configMap: 'gatehouse-trust-bundle',
  publishConfigMaps: o.publishConfigMaps ?? true,
  namespaceSelectors: ['gatehouse.io/inject=enabled', 'gatehouse.io/trust-bundle=enabled'],
  webhook: 'gatehouse-injector',
  intervalMs: o.intervalMs ?? 60_000
})

const writes = (api: FakeKubeApi): string[] => api.requests.filter(r => r.method !== 'GET').map(r => `${r.method} ${r.path}`)
const b64 = (pem: string): string => Buffer.from(pem).toString('base64')

t.test('publishes to its namespace and the labelled ones, and keeps the webhooks\' caBundle; nothing when nothing changed', async t => {
  const api = await cluster()
  const ca = await startCaFixture(t, { publisher: publisherFor(api) })
  const publisher = ca.running.publisher!
  const first = await publisher.sync()
  t.same(first.namespaces, { billing: 'created', 'gatehouse-system': 'created', shop: 'created' }, 'own namespace and both selectors; the unlabelled one untouched')
  t.equal(first.webhook, 'updated')
  t.same(first.errors, [])
  for (const ns of ['gatehouse-system', 'shop', 'billing']) {
    const cm = api.configMaps.get(`${ns}/gatehouse-trust-bundle`)!
    t.equal(cm.data['bundle.pem'], ca.ca.bundlePem, `${ns}: bundle.pem is the CA's bundle`)
    t.equal(cm.metadata.labels['app.kubernetes.io/managed-by'], 'gatehouse-ca')
  }
  t.notOk(api.configMaps.has('unrelated/gatehouse-trust-bundle'))
  const hooks = api.webhooks.get('gatehouse-injector')!.webhooks as Array<{ clientConfig: { caBundle?: string } }>
  t.same(hooks.map(h => h.clientConfig.caBundle), [b64(ca.ca.bundlePem), b64(ca.ca.bundlePem)], 'both webhooks')
  const patch = api.requests.find(r => r.method === 'PATCH')!
  t.equal(patch.contentType, 'application/json-patch+json')
  t.same((patch.body as unknown as Array<{ op: string }>)[0], { op: 'test', path: '/metadata/resourceVersion', value: '500' }, 'the patch is pinned to the version read')
  t.ok(api.requests.every(r => r.path.startsWith('/api/v1/') || r.path.startsWith('/apis/admissionregistration.k8s.io/v1/')), 'only the core and admissionregistration APIs')

  const before = writes(api).length
  const second = await publisher.sync()
  t.same(second.namespaces, { billing: 'unchanged', 'gatehouse-system': 'unchanged', shop: 'unchanged' })
  t.equal(second.webhook, 'unchanged')
  t.equal(writes(api).length, before, 'a round with nothing to change writes nothing')

  // A namespace labelled later gets it at the next round; a hand-edited ConfigMap is put right.
  api.namespaces.set('orders', { 'gatehouse.io/inject': 'enabled' })
  api.configMaps.get('shop/gatehouse-trust-bundle')!.data['bundle.pem'] = 'tampered'
  const third = await publisher.sync()
  t.equal(third.namespaces.orders, 'created')
  t.equal(third.namespaces.shop, 'updated')
  t.equal(api.configMaps.get('shop/gatehouse-trust-bundle')!.data['bundle.pem'], ca.ca.bundlePem)
  const text = await ca.running.metrics.registry.getSingleMetricAsString('gatehouse_ca_bundle_publish_total')
  t.match(text, /gatehouse_ca_bundle_publish_total\{target="configmap",result="created"\} 4/)
  t.match(text, /gatehouse_ca_bundle_publish_total\{target="webhook",result="updated"\} 1/)
  t.ok(ca.logs().some(l => l.event === 'bundle.published'), 'logged')
})

t.test('a root rotation is published everywhere by the CA\'s reload, one command per stage', async t => {
  const api = await cluster()
  const ca = await startCaFixture(t, { publisher: publisherFor(api), reloadIntervalMs: 100, leafTtlMs: 1000 })
  await ca.running.publisher!.sync()
  const old = ca.ca.bundlePem
  rotateRoot(ca.dir, 'prepare', { leafTtlMs: 1000 })
  const next = loadCa(ca.dir).bundlePem
  t.not(next, old, 'prepare adds the new root to the bundle')
  await waitFor(() => ['gatehouse-system', 'shop', 'billing'].every(ns => api.configMaps.get(`${ns}/gatehouse-trust-bundle`)?.data['bundle.pem'] === next), 5000, 'every ConfigMap carries the new bundle')
  await waitFor(() => (api.webhooks.get('gatehouse-injector')!.webhooks as Array<{ clientConfig: { caBundle?: string } }>).every(h => h.clientConfig.caBundle === b64(next)), 5000, 'the caBundle too')
  t.pass('published within the reload interval, without waiting for the publish interval (60 s here)')
})

t.test('failures leave what was published and recover: RBAC, a conflict, an API server down, a bad token', async t => {
  const api = await cluster()
  const ca = await startCaFixture(t, { publisher: publisherFor(api) })
  const publisher = ca.running.publisher!
  api.forbidden.add('create configmaps billing')
  const r = await publisher.sync()
  t.equal(r.namespaces.billing, 'failed', 'forbidden in one namespace')
  t.equal(r.namespaces.shop, 'created', 'the others still get it')
  t.match(r.errors[0], /configmap billing\/gatehouse-trust-bundle: POST .*403 Forbidden: configmaps "gatehouse-trust-bundle" is forbidden: User "system:serviceaccount:gatehouse-system:gatehouse-ca" cannot create/)
  const line = ca.logs().find(l => l.event === 'bundle.publish_failed')!
  t.match(line, { code: 'GH_K8S_API', status: 403, reason: 'Forbidden' }, 'the log line names the code, HTTP status and reason')
  api.forbidden.clear()
  t.equal((await publisher.sync()).namespaces.billing, 'created', 'recovers once RBAC allows it')

  // Someone changes the ConfigMap between our read and our write: 409, and the next round gets it right.
  const cm = api.configMaps.get('shop/gatehouse-trust-bundle')!
  cm.data['bundle.pem'] = 'stale'
  let bumped = false
  api.onRequest = (r) => {
    if (r.method === 'PUT' && r.path.endsWith('/shop/configmaps/gatehouse-trust-bundle') && !bumped) { bumped = true; cm.metadata.resourceVersion = '999999' }
  }
  const conflicted = await publisher.sync()
  t.equal(conflicted.namespaces.shop, 'failed', 'a concurrent change: 409 Conflict, not overwritten blindly')
  t.match(conflicted.errors.join('\n'), /409 Conflict: Operation cannot be fulfilled on configmaps "gatehouse-trust-bundle": the object has been modified/)
  t.equal((await publisher.sync()).namespaces.shop, 'updated', 'the next round reads it again and updates')

  // A token the API server does not accept, then an API server that is not there: logged, retried, no crash.
  writeFileSync(join(api.saDir, 'token'), 'not-the-token')
  const c2 = client(api)
  await t.rejects(c2.get('/api/v1/namespaces/shop/configmaps/gatehouse-trust-bundle'), { code: 'GH_K8S_API', httpStatus: 401, reason: 'Unauthorized' })
  writeFileSync(join(api.saDir, 'token'), api.token)
  await api.close()
  const down = await publisher.sync()
  t.ok(down.errors.length > 0 && down.errors.every(e => /did not answer/.test(e)), 'API server down: every target failed, saying why')
  t.ok(api.configMaps.size >= 3, 'what was published stays')
})

t.test('webhook only (trust-manager distributes the ConfigMaps): no ConfigMap is touched', async t => {
  const api = await cluster()
  const ca = await startCaFixture(t, { publisher: publisherFor(api, { publishConfigMaps: false }) })
  const r = await ca.running.publisher!.sync()
  t.same(r.namespaces, {})
  t.equal(r.webhook, 'updated')
  t.equal(api.configMaps.size, 0)
  t.notOk(api.requests.some(r => r.path.includes('/configmaps') || r.path === '/api/v1/namespaces'), 'no ConfigMap or namespace request at all')
})

t.test('--dns-san: the injector\'s SVID carries the webhook\'s DNS name, and no other identity does', async t => {
  const injector = SpiffeId.parse('spiffe://example.org/ns/gatehouse-system/sa/gatehouse-injector')
  const dns = 'gatehouse-injector.gatehouse-system.svc'
  const ca = await startCaFixture(t, { dnsSans: new Map([[injector.toString(), [dns]]]) })
  const issue = async (id: SpiffeId): Promise<X509Certificate> => {
    const { csr } = keyAndCsr()
    const r = await postSvid(ca, { token: await joinToken(ca.ca, { id }), csr })
    t.equal(r.status, 200, r.text)
    return new X509Certificate(String(r.json.chain))
  }
  const cert = await issue(injector)
  t.equal(cert.checkHost(dns), dns, 'the DNS SAN the API server checks')
  t.match(cert.subjectAltName, /URI:spiffe:\/\/example\.org\/ns\/gatehouse-system\/sa\/gatehouse-injector/, 'still an SVID')
  const other = await issue(SpiffeId.parse('spiffe://example.org/ns/shop/sa/payments'))
  t.equal(other.checkHost(dns), undefined, 'another workload gets no DNS name')
})

t.test('ca serve wires it from its flags, in a pod\'s environment', async t => {
  const api = await cluster()
  const dir = join(tempDir(t, 'gh-pub-ca-'), 'ca')
  t.equal(gatehouse(['ca', 'init', '--dir', dir, '--trust-domain', 'example.org']).status, 0)
  const serve = await startProcess(t, process.execPath, [cliPath, 'ca', 'serve', '--dir', dir, '--listen', '127.0.0.1:0', '--publish-trust-bundle', '--webhook-ca-bundle', 'gatehouse-injector', '--kube-service-account-dir', api.saDir, '--dns-san', 'spiffe://example.org/ns/gatehouse-system/sa/gatehouse-injector=gatehouse-injector.gatehouse-system.svc'], /"event":"ca.listening"/, { env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) } })
  await waitFor(() => api.configMaps.size === 3 && (api.webhooks.get('gatehouse-injector')!.webhooks as Array<{ clientConfig: { caBundle?: string } }>).every(h => h.clientConfig.caBundle !== undefined), 10_000, 'published by ca serve')
  t.equal(api.configMaps.get('shop/gatehouse-trust-bundle')!.data['bundle.pem'], loadCa(dir).bundlePem)
  await waitFor(() => /"event":"bundle.published"/.test(serve.output()), 5000, 'the log line')
  const outside = gatehouse(['ca', 'serve', '--dir', dir, '--listen', '127.0.0.1:0', '--publish-trust-bundle'], { KUBERNETES_SERVICE_HOST: '' })
  t.equal(outside.status, 2, 'outside a pod: a configuration error, not a crash loop')
  t.match(outside.stderr, /run them in a pod \(KUBERNETES_SERVICE_HOST is not set\)/)
  const bad = gatehouse(['ca', 'serve', '--dir', dir, '--listen', '127.0.0.1:0', '--dns-san', 'spiffe://other.org/x=Bad_Name'])
  t.equal(bad.status, 2)
  t.match(bad.stderr, /--dns-san: expected ID=DNS with a SPIFFE ID of trust domain example.org/)
})
