import t, { type Test } from 'tap'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { basename, dirname, join, relative, resolve } from 'node:path'
import { parse as parseYaml, stringify } from 'yaml'
import { loadConfig } from '../src/config.ts'
import { caSchemas } from '../src/cli/ca.ts'
import { injectSchemas } from '../src/cli/inject.ts'
import { DEFAULT_INJECTOR_CONFIG, FILE, MOUNT, VOLUME } from '../src/inject/injector-config.ts'
import { proxyVolumes } from '../src/inject/proxy-container.ts'
import { BUNDLE_KEY, MANAGED_BY } from '../src/ca/bundle-publisher.ts'
import { skipWithoutKubectl, NS, deployDir, kustomize, find, podSpecOf, gatehouseArgs, checkFlags, envOf, selects, checkHardened, podProblems, type K8sObject as K } from './helpers/k8s-pod.ts'
import { modelProblems } from './helpers/k8s-models.ts'
import { renderOverlay } from './helpers/kustomize.ts'
import { fencedBlocks } from './helpers/markdown-run.ts'
import { tempDir } from './helpers/files.ts'

// Issue 20, 1(a) and 2(a): the certificates and the trust bundle without hand work. deploy/ (the
// default: the CA publishes the bundle ConfigMaps and the webhook's caBundle, and issues the
// injector's serving certificate), and overlays of it with components/cert-manager and
// components/trust-manager, rendered by kubectl's kustomize. Every rendered object validates against
// its schema (kubernetes-models, @kubernetes-models/cert-manager for cert-manager's and
// trust-manager's CRDs, with strict field names); the flags are real and agree with each other and
// with the objects they name; the CA's RBAC is exactly what its publisher needs; the components'
// patches land where they must, in any order, and fail the render when the base moves under them.

const WEBHOOK = 'gatehouse-injector'
const TRUST_NAMESPACE = 'cert-manager' // trust-manager's default --trust-namespace

/** `ca serve` / `inject serve` settings of the rendered Deployment, its flags checked against the CLI. */
function settings (t: Test, docs: K[], name: 'gatehouse-ca' | 'gatehouse-injector'): { dep: K, c: K, cfg: K } {
  const dep = find(docs, 'Deployment', name, NS)!
  const c = podSpecOf(dep)!.containers[0]
  const command = name === 'gatehouse-ca' ? 'ca serve' : 'inject serve'
  const schema = name === 'gatehouse-ca' ? caSchemas['ca serve'] : injectSchemas['inject serve']
  const args = gatehouseArgs(c)
  t.same(args.slice(0, 2), command.split(' '), `${name}: gatehouse ${command}`)
  return { dep, c, cfg: checkFlags(t, name, command, schema, args.slice(2), envOf(c)) as K }
}

const volumeOf = (dep: K, mountPath: string): K | undefined => {
  const spec = podSpecOf(dep)!
  const mount = spec.containers[0].volumeMounts.find((m: K) => m.mountPath === mountPath)
  return mount === undefined ? undefined : { mount, volume: spec.volumes.find((v: K) => v.name === mount.name) }
}

const key = (d: K): string => `${String(d.kind)}/${String(d.metadata.namespace ?? '')}/${String(d.metadata.name)}`

/** The objects in a stable order, each gatehouse Deployment's args as the settings they make (appended flags land in component order). */
function meaning (docs: K[]): K[] {
  return [...docs].sort((a, b) => key(a).localeCompare(key(b))).map(d => {
    if (d.kind !== 'Deployment' || d.metadata.namespace !== NS) return d
    const out = structuredClone(d)
    const c = out.spec.template.spec.containers[0]
    const [a, b, ...argv] = gatehouseArgs(c) as [string, string, ...string[]]
    c.args = loadConfig(`${a} ${b}`, a === 'ca' ? caSchemas['ca serve'] : injectSchemas['inject serve'], { argv })
    return out
  })
}

t.test('the model checks refuse what the API server would', async t => {
  const cert = { apiVersion: 'cert-manager.io/v1', kind: 'Certificate', metadata: { name: 'x', namespace: NS }, spec: { secretName: 's', issuerRef: { name: 'i' } } }
  t.same(await modelProblems(cert), [], 'a minimal Certificate passes')
  t.same(await modelProblems({ ...cert, spec: { ...cert.spec, renewbefore: '720h' } }), ['Certificate.spec.renewbefore: unknown field'], 'a misspelt field (the generated validator alone lets it through)')
  t.same(await modelProblems({ ...cert, metadata: { ...cert.metadata, annotation: {} } }), ['Certificate.metadata.annotation: unknown field'], 'in metadata too (apimachinery of the CRD package)')
  t.match((await modelProblems({ ...cert, spec: { issuerRef: { name: 'i' } } })).join('\n'), /^schema: .*secretName/, 'a missing required field')
  const bundle = { apiVersion: 'trust.cert-manager.io/v1alpha1', kind: 'Bundle', metadata: { name: 'b' }, spec: { sources: [{ inLine: 'x' }], target: { configMap: { key: 'k' } } } }
  t.same(await modelProblems(bundle), [], 'a minimal Bundle passes')
  t.match((await modelProblems({ ...bundle, spec: { ...bundle.spec, sources: [] } })).join('\n'), /^schema: .*sources/, 'a Bundle without a source')
  t.same(await modelProblems({ ...bundle, spec: { ...bundle.spec, target: { configMap: { key: 'k' }, namespaceSelector: { matchLabel: {} } } } }), ['Bundle.spec.target.namespaceSelector.matchLabel: unknown field'], 'a misspelt selector field')
  t.match((await modelProblems({ apiVersion: 'example.com/v1', kind: 'Thing', metadata: { name: 'x' } })).join('\n'), /^no model for example\.com\/v1 Thing/, 'a kind without a model is a problem, not a pass')
  t.same(await modelProblems({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' }, spec: { selector: {}, template: { spec: { containers: [{ name: 'a', image: 'x', imagee: 'x' }] } } } }), ['Deployment.spec.template.spec.containers[0].imagee: unknown field'], 'and the built-in kinds likewise')
})

t.test('deploy/ and its certificate components, rendered by kubectl kustomize', { skip: skipWithoutKubectl }, async t => {
  const base = kustomize(deployDir)
  const certManager = renderOverlay(t, { components: ['cert-manager'] })
  const trustManager = renderOverlay(t, { components: ['trust-manager'] })
  const all = renderOverlay(t, { components: ['monitoring', 'cert-manager', 'trust-manager'] })
  const renders = { base, 'cert-manager': certManager, 'trust-manager': trustManager, 'all components': all }

  const injSvc = find(base, 'Service', 'gatehouse-injector', NS)!
  const webhookDns = `${String(injSvc.metadata.name)}.${NS}.svc`
  const baseInj = settings(t, base, 'gatehouse-injector')
  const baseCa = settings(t, base, 'gatehouse-ca')

  t.test('every rendered object validates against its schema, strict field names, pods as the API server checks them', async t => {
    for (const [name, docs] of Object.entries(renders)) {
      t.ok(docs.length > 10, `${name}: ${docs.length} objects`)
      for (const d of docs) {
        t.same(await modelProblems(d), [], `${name}: ${key(d)} validates`)
        if (d.kind === 'Deployment') t.same(podProblems({ apiVersion: 'v1', kind: 'Pod', metadata: d.spec.template.metadata, spec: d.spec.template.spec }), [], `${name}: ${key(d)} pod template (mounts name volumes, unique names)`)
      }
      checkHardened(t, docs, name)
    }
    // What the components add is what the schemas were checked on.
    t.same(certManager.filter(d => d.apiVersion === 'cert-manager.io/v1').map(key).sort(), ['Certificate/gatehouse-system/gatehouse-injector', 'Certificate/gatehouse-system/gatehouse-webhook-ca', 'Issuer/gatehouse-system/gatehouse-selfsigned', 'Issuer/gatehouse-system/gatehouse-webhook-ca'])
    t.same(trustManager.filter(d => d.apiVersion === 'trust.cert-manager.io/v1alpha1').map(key), ['Bundle//gatehouse-trust-bundle'], 'one Bundle, cluster-scoped')
  })

  t.test('base: the CA publishes the trust bundle and the caBundle, and names the webhook in the injector\'s SVID', async t => {
    const { cfg, dep } = baseCa
    const hook = find(base, 'MutatingWebhookConfiguration', WEBHOOK)!
    t.equal(cfg.publishTrustBundle, true, '--publish-trust-bundle')
    t.equal(cfg.trustBundleConfigmap, baseInj.cfg.bundleConfigmap, 'the ConfigMap the injected sidecars mount (--bundle-configmap)')
    t.equal(cfg.webhookCaBundle, hook.metadata.name, '--webhook-ca-bundle names the webhook configuration')
    // Every namespace the namespace webhook injects gets the ConfigMap: its label is one of the publisher's selectors.
    const nsHook = hook.webhooks.find((w: K) => w.name === 'namespace.inject.gatehouse.io')
    const injectLabel = nsHook.namespaceSelector.matchExpressions.find((e: K) => e.operator === 'In')
    t.ok(cfg.publishNamespaceSelector.includes(`${String(injectLabel.key)}=${String(injectLabel.values[0])}`), 'namespaces labelled for injection get the bundle')
    t.ok(cfg.publishNamespaceSelector.includes('gatehouse.io/trust-bundle=enabled'), 'and those that opt in per pod can ask for it')
    // The DNS SAN: the injector's SPIFFE ID (its service account, in the trust domain it tells sidecars), the name the API server calls.
    const injSa = podSpecOf(baseInj.dep)!.serviceAccountName
    t.same(cfg.dnsSan, [`spiffe://${String(baseInj.cfg.trustDomain)}/ns/${NS}/sa/${String(injSa)}=${webhookDns}`], '--dns-san: the injector\'s identity gets its Service name')
    t.equal(baseInj.cfg.dnsName, webhookDns, 'which the injector checks its certificate for (--dns-name)')
    for (const w of hook.webhooks) t.same([w.clientConfig.service.name, w.clientConfig.service.namespace], [injSvc.metadata.name, NS], `${String(w.name)}: the API server calls that Service`)
    // Its API token: mounted in the pod (the SA's default stays off), for the JWKS and the publisher.
    t.equal(podSpecOf(dep)!.automountServiceAccountToken, true, 'the CA pod mounts its API token')
    t.equal(find(base, 'ServiceAccount', 'gatehouse-ca', NS)!.automountServiceAccountToken, false, 'no other pod of the account does by default')
    t.equal(dep.metadata.namespace, NS, 'and publishes into its own namespace, the injector\'s')
  })

  t.test('base: the publisher\'s RBAC is least privilege', async t => {
    const role = find(base, 'ClusterRole', 'gatehouse-ca-publisher')!
    t.same(role.rules, [
      { apiGroups: [''], resources: ['namespaces'], verbs: ['list'] },
      { apiGroups: [''], resources: ['configmaps'], resourceNames: [baseCa.cfg.trustBundleConfigmap], verbs: ['get', 'update'] },
      { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
      { apiGroups: ['admissionregistration.k8s.io'], resources: ['mutatingwebhookconfigurations'], resourceNames: [baseCa.cfg.webhookCaBundle], verbs: ['get', 'patch'] }
    ], 'list namespaces; get/update its ConfigMap by name, create ConfigMaps; get/patch its webhook configuration by name')
    for (const r of base.filter(d => d.kind === 'ClusterRole' || d.kind === 'Role')) {
      t.notOk(JSON.stringify(r.rules).includes('"*"'), `${String(r.metadata.name)}: no wildcard`)
      for (const rule of r.rules) {
        if (rule.resources === undefined) continue
        t.notOk(rule.resources.includes('secrets'), `${String(r.metadata.name)}: no Secrets`)
        t.notOk(rule.verbs.some((v: string) => ['delete', 'deletecollection', 'watch', 'escalate', 'bind', 'impersonate'].includes(v)), `${String(r.metadata.name)}: no ${String(rule.verbs)}`)
        // Only create and list cannot name their objects (resourceNames does not restrict either).
        if (rule.verbs.some((v: string) => v !== 'create' && v !== 'list')) t.ok(rule.resourceNames?.length > 0, `${String(r.metadata.name)}: ${String(rule.resources)} ${String(rule.verbs)} by name`)
      }
    }
    t.match(readFileSync(join(deployDir, 'base/ca/rbac-publisher.yaml'), 'utf8'), /create cannot be restricted by resourceNames/, 'the file says why create is not by name')
    const binding = find(base, 'ClusterRoleBinding', 'gatehouse-ca-publisher')!
    t.same(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name })
    t.same(binding.subjects, [{ kind: 'ServiceAccount', name: podSpecOf(baseCa.dep)!.serviceAccountName, namespace: NS }], 'bound to the CA\'s service account only')
  })

  t.test('base: the injector gets its serving certificate from the CA, as a sidecar gets its SVID', async t => {
    const { cfg, dep, c } = baseInj
    t.equal(cfg.cert, undefined, 'no --cert')
    t.equal(cfg.key, undefined, 'no --key')
    t.equal(cfg.caUrl, `https://gatehouse-ca.${NS}.svc:${String(find(base, 'Service', 'gatehouse-ca', NS)!.spec.ports[0].port)}`, 'from the CA Service')
    const sidecar = proxyVolumes(DEFAULT_INJECTOR_CONFIG, { upstreamPort: 8080, policyConfigMap: 'p', routesConfigMap: 'r', resources: DEFAULT_INJECTOR_CONFIG.resources })
    // The token: the sidecars' projected token (audience gatehouse-ca), with a shorter life.
    t.equal(cfg.k8sTokenFile, `${MOUNT.token}/${FILE.token}`, '--k8s-token-file where sidecars have theirs')
    const token = volumeOf(dep, dirname(cfg.k8sTokenFile))
    t.equal(token?.mount.readOnly, true)
    const sidecarToken = sidecar.find(v => v.name === VOLUME.token) as K
    const sa = token?.volume.projected?.sources?.[0]?.serviceAccountToken
    t.same(token?.volume, { name: VOLUME.token, projected: { sources: [{ serviceAccountToken: { ...sidecarToken.projected.sources[0].serviceAccountToken, expirationSeconds: sa?.expirationSeconds } }] } }, 'the sidecars\' token volume')
    t.equal(sa?.audience, 'gatehouse-ca', 'audience gatehouse-ca: only the CA accepts it')
    t.ok(sa?.expirationSeconds >= 600 && sa?.expirationSeconds <= DEFAULT_INJECTOR_CONFIG.tokenExpirationSeconds, `short-lived: ${String(sa?.expirationSeconds)} s (600 is the API server's minimum)`)
    t.equal(basename(cfg.k8sTokenFile), sa?.path)
    // The bundle: the ConfigMap the CA publishes in this namespace, mounted as the sidecars mount theirs.
    t.equal(cfg.trustBundle, `${MOUNT.bundle}/${FILE.bundle}`, '--trust-bundle where sidecars have theirs')
    const bundle = volumeOf(dep, dirname(cfg.trustBundle))
    t.equal(bundle?.mount.readOnly, true)
    t.same(bundle?.volume, sidecar.find(v => v.name === VOLUME.bundle), 'the sidecars\' bundle volume')
    t.equal(bundle?.volume.configMap.name, baseCa.cfg.trustBundleConfigmap, 'the ConfigMap the CA publishes')
    t.equal(bundle?.volume.configMap.items[0].key, BUNDLE_KEY, 'under the key the CA writes')
    // Nothing else: no Secret, no API token.
    t.same(podSpecOf(dep)!.volumes.map((v: K) => v.name), [VOLUME.token, VOLUME.bundle], 'those two volumes only')
    t.equal(podSpecOf(dep)!.automountServiceAccountToken, false, 'no API token')
    t.notOk(base.some(d => d.kind === 'Secret'), 'no Secret to make by hand besides the CA\'s')
    t.same([c.startupProbe?.httpGet?.path, c.startupProbe?.httpGet?.scheme], ['/healthz', 'HTTPS'], 'a startup probe: liveness waits for the first certificate')
    t.ok(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold >= 120, 'for minutes, not seconds')
  })

  t.test('components/cert-manager: the certificate from a cert-manager chain, the caBundle from cainjector', async t => {
    const docs = certManager
    const cert = find(docs, 'Certificate', 'gatehouse-injector', NS)!
    t.same(cert.spec.dnsNames, [webhookDns], 'dnsNames: the name the API server calls')
    t.equal(cert.spec.secretName, 'gatehouse-injector-tls')
    t.same([cert.spec.duration, cert.spec.renewBefore], ['2160h', '720h'], '90 days, renewed 30 days ahead')
    t.ok(cert.spec.usages.includes('server auth'))
    // The chain resolves inside the render: injector Certificate -> CA Issuer -> CA Certificate -> self-signed Issuer.
    const caIssuer = find(docs, cert.spec.issuerRef.kind, cert.spec.issuerRef.name, NS)!
    t.ok(caIssuer?.spec.ca, 'issued by a CA Issuer in gatehouse-system')
    const caCert = docs.find(d => d.kind === 'Certificate' && d.spec.secretName === caIssuer.spec.ca.secretName)!
    t.equal(caCert?.spec.isCA, true, 'whose key pair is a CA Certificate')
    t.equal(caCert?.spec.privateKey.rotationPolicy, 'Never', 'which keeps its key when renewed (leaves stay valid)')
    t.ok(find(docs, caCert.spec.issuerRef.kind, caCert.spec.issuerRef.name, NS)?.spec.selfSigned !== undefined, 'self-signed')
    for (const d of docs.filter(d => d.apiVersion === 'cert-manager.io/v1')) t.equal(d.metadata.namespace, NS, `${key(d)} in ${NS}`)
    // cainjector copies that Certificate's CA into the caBundle; the CA no longer writes it.
    const hook = find(docs, 'MutatingWebhookConfiguration', WEBHOOK)!
    t.equal(hook.metadata.annotations['cert-manager.io/inject-ca-from'], `${NS}/${String(cert.metadata.name)}`, 'inject-ca-from the injector\'s Certificate')
    const ca = settings(t, docs, 'gatehouse-ca')
    t.equal(ca.cfg.webhookCaBundle, undefined, 'the CA has no --webhook-ca-bundle')
    t.notOk(gatehouseArgs(ca.c).includes(WEBHOOK), 'nor its value')
    t.equal(ca.cfg.publishTrustBundle, true, 'it still publishes the trust bundle for the sidecars')
    // The injector serves the Secret's files.
    const inj = settings(t, docs, 'gatehouse-injector')
    t.same([inj.cfg.cert, inj.cfg.key], ['/etc/gatehouse/webhook/tls.crt', '/etc/gatehouse/webhook/tls.key'], '--cert, --key')
    t.same([inj.cfg.k8sTokenFile, inj.cfg.trustBundle], [undefined, undefined], 'no --k8s-token-file, no --trust-bundle')
    const tls = volumeOf(inj.dep, dirname(inj.cfg.cert))
    t.equal(tls?.mount.readOnly, true)
    t.same(tls?.volume.secret, { secretName: cert.spec.secretName, defaultMode: 0o440 }, 'from the Certificate\'s Secret, 0440')
    t.same(podSpecOf(inj.dep)!.volumes.map((v: K) => v.name), [tls?.volume.name], 'no token, no bundle volume')
    t.same(find(docs, 'NetworkPolicy', 'gatehouse-injector', NS)!.spec.egress, [], 'the injector calls nothing: no egress')
    // Nothing else of either Deployment changed.
    const strip = (dep: K): K => { const d = structuredClone(dep); const c = d.spec.template.spec.containers[0]; delete c.args; delete c.volumeMounts; delete d.spec.template.spec.volumes; return d }
    t.same(strip(inj.dep), strip(baseInj.dep), 'the injector is the base\'s but for args and volumes')
    const caArgs = gatehouseArgs(baseCa.c)
    const at = caArgs.indexOf('--webhook-ca-bundle')
    t.same(gatehouseArgs(ca.c), [...caArgs.slice(0, at), ...caArgs.slice(at + 2)], 'the CA is the base\'s but for those two args')
  })

  t.test('components/trust-manager: a Bundle distributes the CA\'s bundle; the CA publishes only its source and its own copy', async t => {
    const docs = trustManager
    const bundle = find(docs, 'Bundle', 'gatehouse-trust-bundle')!
    // The target: the ConfigMap the sidecars mount (a Bundle's target takes the Bundle's name), under their key.
    t.equal(bundle.metadata.name, baseInj.cfg.bundleConfigmap, 'named after the ConfigMap the sidecars mount')
    t.same(bundle.spec.target.configMap, { key: FILE.bundle }, 'key bundle.pem')
    t.same(bundle.spec.target.namespaceSelector, { matchLabels: { 'gatehouse.io/inject': 'enabled' } })
    const nsHook = find(docs, 'MutatingWebhookConfiguration', WEBHOOK)!.webhooks.find((w: K) => w.name === 'namespace.inject.gatehouse.io')
    t.ok(selects(nsHook.namespaceSelector, { 'kubernetes.io/metadata.name': 'shop', ...bundle.spec.target.namespaceSelector.matchLabels }), 'the namespaces the namespace webhook injects')
    const system = find(docs, 'Namespace', NS)!
    t.notOk(selects(bundle.spec.target.namespaceSelector, system.metadata.labels), `not ${NS}: the CA keeps that copy`)
    t.notOk(selects(bundle.spec.target.namespaceSelector, { 'kubernetes.io/metadata.name': TRUST_NAMESPACE }), 'not the trust namespace, where its source is')
    // The source: what the CA publishes into the trust namespace, found by the labels the publisher sets.
    t.equal(bundle.spec.sources.length, 1)
    const source = bundle.spec.sources[0]
    // trust-manager's own admission rules (its webhook; no npm model carries them): one source type
    // per source, name or selector, and never the Bundle's own target as its source.
    t.equal(['configMap', 'secret', 'inLine', 'useDefaultCAs'].filter(k => k in source).length, 1, 'one source type')
    t.same(Object.keys(source.configMap).sort(), ['key', 'selector'], 'by selector (no name) and key')
    t.notOk(source.configMap.name === bundle.metadata.name && source.configMap.key === bundle.spec.target.configMap.key, 'not "the same source as target"')
    t.ok(selects(source.configMap.selector, { ...MANAGED_BY }), 'selects the ConfigMaps the CA publishes (their label)')
    t.equal(source.configMap.key, BUNDLE_KEY, 'under the key the CA writes')
    // The CA: still publishes (its own namespace: the injector's copy; the trust namespace: the source), nowhere else.
    const ca = settings(t, docs, 'gatehouse-ca')
    t.equal(ca.cfg.publishTrustBundle, true, 'the CA keeps --publish-trust-bundle: the injector mounts its copy in gatehouse-system')
    t.same(ca.cfg.publishNamespaceSelector, [`kubernetes.io/metadata.name=${TRUST_NAMESPACE}`], 'and publishes into trust-manager\'s trust namespace only, not the application namespaces')
    t.equal(ca.cfg.webhookCaBundle, WEBHOOK, 'the caBundle is still the CA\'s')
    t.same(find(docs, 'Deployment', 'gatehouse-injector', NS), baseInj.dep, 'the injector is untouched')
    t.match(readFileSync(join(deployDir, 'components/trust-manager/bundle.yaml'), 'utf8'), /cannot[\s#]+also pick gatehouse-system/, 'the own-namespace case is explained')
  })

  t.test('the components compose, in any order', async t => {
    const reversed = renderOverlay(t, { components: ['trust-manager', 'cert-manager', 'monitoring'] })
    t.same(meaning(reversed), meaning(all), 'the same objects and settings whatever the order of components:')
    const ca = settings(t, all, 'gatehouse-ca').cfg
    t.same([ca.publishTrustBundle, ca.webhookCaBundle, ca.publishNamespaceSelector, ca.metricsListen?.port], [true, undefined, [`kubernetes.io/metadata.name=${TRUST_NAMESPACE}`], 15444], 'the CA: each component\'s change')
    const inj = settings(t, all, 'gatehouse-injector').cfg
    t.same([inj.cert, inj.k8sTokenFile, inj.metricsListen?.port], ['/etc/gatehouse/webhook/tls.crt', undefined, 15018], 'the injector too')
  })

  t.test('the cert-manager patches fail the render when the base moves under them', async t => {
    // A base whose injector has one more argument before the certificate's: the test ops refuse it.
    const work = tempDir(t, 'gh-moved-')
    const moved = join(work, 'moved')
    const overlay = join(work, 'overlay')
    mkdirSync(moved)
    mkdirSync(overlay)
    writeFileSync(join(moved, 'kustomization.yaml'), stringify({
      apiVersion: 'kustomize.config.k8s.io/v1beta1',
      kind: 'Kustomization',
      resources: [relative(moved, deployDir)],
      patches: [{ target: { kind: 'Deployment', name: 'gatehouse-injector' }, patch: '- {op: add, path: /spec/template/spec/containers/0/args/4, value: --reload-interval=5s}' }]
    }))
    writeFileSync(join(overlay, 'kustomization.yaml'), stringify({ apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', resources: ['../moved'], components: [relative(overlay, join(deployDir, 'components/cert-manager'))] }))
    t.throws(() => kustomize(overlay), /test failed/, 'kustomize stops at the test op')
  })

  t.test('deploy/README.md names the components by their paths', async t => {
    const readme = readFileSync(join(deployDir, 'README.md'), 'utf8')
    const named: string[] = []
    for (const b of fencedBlocks(readme).filter(b => b.lang === 'yaml')) {
      let doc: K | null
      try { doc = parseYaml(b.text) as K | null } catch { continue } // a fragment, not a kustomization
      for (const c of doc?.components ?? []) {
        const m = /(?:^|\/)deploy\/(components\/[\w-]+)$/.exec(c)
        t.ok(m, `README.md:${b.line}: ${String(c)} is a path into deploy/`)
        if (m !== null) { named.push(m[1]!); t.ok(existsSync(join(resolve(deployDir, m[1]!), 'kustomization.yaml')), `${m[1]!} exists`) }
      }
    }
    for (const c of ['components/cert-manager', 'components/trust-manager']) t.ok(named.includes(c), `README.md shows the components: line for ${c}`)
  })
})
