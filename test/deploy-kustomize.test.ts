import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseAllDocuments, parse as parseYaml, stringify } from 'yaml'
import { loadConfig, type Schema } from '../src/config.ts'
import { caSchemas } from '../src/cli/ca.ts'
import { proxySchema } from '../src/cli/proxy.ts'
import { injectSchemas } from '../src/cli/inject.ts'
import { parsePolicy } from '../src/policy/load.ts'
import { parseRoutes } from '../src/proxy/routes.ts'
import { gatehouse } from './helpers/cli.ts'

// deploy/ renders with kubectl's kustomize, and what it renders is what the README and the issue
// promise: the objects, their security settings, least-privilege RBAC, the webhook's choices, and
// `gatehouse` arguments that the CLI actually accepts.

/* eslint-disable @typescript-eslint/no-explicit-any */
type K = Record<string, any>

const repo = fileURLToPath(new URL('..', import.meta.url))
const deployDir = join(repo, 'deploy')
const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' })
const noKubectl = kubectl.error !== undefined || kubectl.status !== 0

const work = mkdtempSync(join(tmpdir(), 'gh-deploy-'))
t.teardown(() => { rmSync(work, { recursive: true, force: true }) })

function kustomize (dir: string): K[] {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 })
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${r.stderr}`)
  return parseAllDocuments(r.stdout).map(d => d.toJS() as K).filter(d => d !== null)
}

const find = (docs: K[], kind: string, name: string, namespace?: string): K | undefined =>
  docs.find(d => d.kind === kind && d.metadata?.name === name && (namespace === undefined || d.metadata?.namespace === namespace))

const podSpecOf = (d: K): K | undefined =>
  d.kind === 'Pod' ? d.spec : d.kind === 'CronJob' ? d.spec?.jobTemplate?.spec?.template?.spec : d.spec?.template?.spec

const containersOf = (d: K): K[] => {
  const spec = podSpecOf(d)
  return spec === undefined ? [] : [...(spec.initContainers ?? []), ...(spec.containers ?? [])]
}

/** The args of a container as gatehouse receives them (the image's entrypoint is `gatehouse`). */
function gatehouseArgs (c: K): string[] {
  return c.command === undefined ? (c.args ?? []) : []
}

/** Flags given to a `gatehouse` subcommand must be real flags of it, with valid values. */
function checkFlags (t: Test, what: string, command: string, schema: Schema, argv: string[], env: Record<string, string> = {}): ReturnType<typeof loadConfig> {
  const names = argv.filter(a => a.startsWith('--')).map(a => a.slice(2).split('=')[0]!)
  for (const n of names) t.ok(n in schema, `${what}: --${n} is a flag of 'gatehouse ${command}'`)
  for (const e of Object.keys(env)) t.ok(Object.keys(schema).some(n => `GATEHOUSE_${n.replace(/-/g, '_').toUpperCase()}` === e), `${what}: env ${e} is a flag of 'gatehouse ${command}'`)
  // loadConfig checks every value too, and reports every problem at once.
  return loadConfig(command, schema, { argv, env })
}

const envOf = (c: K): Record<string, string> =>
  Object.fromEntries((c.env ?? []).filter((e: K) => typeof e.name === 'string' && e.name.startsWith('GATEHOUSE_') && typeof e.value === 'string').map((e: K) => [e.name, e.value]))

/** matchExpressions of a label selector, evaluated (In, NotIn, Exists, DoesNotExist). */
function selects (selector: K | undefined, labels: Record<string, string>): boolean {
  if (selector === undefined) return true
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false
  for (const e of selector.matchExpressions ?? []) {
    const has = e.key in labels
    const ok = e.operator === 'In' ? has && e.values.includes(labels[e.key])
      : e.operator === 'NotIn' ? !has || !e.values.includes(labels[e.key])
        : e.operator === 'Exists' ? has : !has
    if (!ok) return false
  }
  return true
}

function checkHardened (t: Test, docs: K[], label: string): void {
  let n = 0
  for (const d of docs) {
    for (const c of containersOf(d)) {
      n++
      const where = `${label} ${d.kind}/${d.metadata.namespace ?? ''}/${d.metadata.name} container ${c.name}`
      const sc = c.securityContext ?? {}
      t.equal(sc.runAsNonRoot, true, `${where}: runAsNonRoot`)
      t.equal(sc.readOnlyRootFilesystem, true, `${where}: readOnlyRootFilesystem`)
      t.equal(sc.allowPrivilegeEscalation, false, `${where}: allowPrivilegeEscalation false`)
      t.ok(sc.capabilities?.drop?.includes('ALL'), `${where}: drops ALL capabilities`)
      t.same(sc.capabilities?.add ?? [], [], `${where}: adds no capability`)
      t.not(sc.privileged, true, `${where}: not privileged`)
      t.ok(c.resources?.limits?.memory !== undefined && c.resources?.requests?.cpu !== undefined, `${where}: resource requests and limits`)
      // pinned by a tag (or a digest), never :latest or untagged
      const image = String(c.image)
      const lastPart = image.split('/').pop()!
      const tag = lastPart.includes('@') ? 'digest' : lastPart.split(':')[1]
      t.ok(tag !== undefined && tag !== '' && tag !== 'latest', `${where}: image ${image} is pinned`)
    }
  }
  t.ok(n > 0, `${label}: containers were checked`)
}

t.test('kubectl kustomize deploy/ and deploy/examples', { skip: noKubectl ? 'kubectl is not installed: cannot render deploy/ (install kubectl to run this test)' : false }, async t => {
  const base = kustomize(deployDir)
  const examples = kustomize(join(deployDir, 'examples'))
  const NS = 'gatehouse-system'

  t.test('namespace and placement', async t => {
    const ns = find(base, 'Namespace', NS)
    t.ok(ns, 'namespace gatehouse-system')
    t.equal(ns?.metadata.labels['pod-security.kubernetes.io/enforce'], 'restricted')
    const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration'])
    for (const d of base) {
      if (!clusterScoped.has(d.kind)) t.equal(d.metadata.namespace, NS, `${d.kind}/${d.metadata.name} is in ${NS}`)
    }
    const baseKeys = new Set(base.map(d => `${d.kind}/${d.metadata.namespace ?? ''}/${d.metadata.name}`))
    t.ok([...baseKeys].every(k => examples.some(d => `${d.kind}/${d.metadata.namespace ?? ''}/${d.metadata.name}` === k)), 'examples is an overlay of the base')
  })

  t.test('CA: 2 replicas, ca serve with real flags, the Secret read-only, Service, PDB', async t => {
    const ca = find(base, 'Deployment', 'gatehouse-ca', NS)!
    t.ok(ca, 'CA Deployment')
    t.equal(ca.spec.replicas, 2)
    t.equal(ca.spec.strategy.rollingUpdate.maxUnavailable, 0)
    const spec = podSpecOf(ca)!
    t.equal(spec.containers.length, 1)
    const c = spec.containers[0]
    const args = gatehouseArgs(c)
    t.same(args.slice(0, 2), ['ca', 'serve'])
    const cfg = checkFlags(t, 'CA', 'ca serve', caSchemas['ca serve'], args.slice(2), envOf(c)) as K
    t.equal(cfg.dir, '/etc/gatehouse/ca')
    t.same(cfg.listen, { host: '0.0.0.0', port: 15443 })
    t.equal(cfg.jwksUrl, 'https://kubernetes.default.svc/openid/v1/jwks')
    t.equal(cfg.jwksCaFile, '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt')
    t.equal(cfg.jwksTokenFile, '/var/run/secrets/kubernetes.io/serviceaccount/token')
    t.equal(cfg.issuer, 'https://kubernetes.default.svc.cluster.local')
    t.same(cfg.servingDns, ['gatehouse-ca.gatehouse-system.svc'])
    t.equal(spec.automountServiceAccountToken, true, 'its own API token is mounted: --jwks-token-file')
    t.equal(spec.serviceAccountName, 'gatehouse-ca')
    const mount = c.volumeMounts.find((m: K) => m.mountPath === cfg.dir)
    t.equal(mount?.readOnly, true, 'the CA directory is mounted read-only')
    const vol = spec.volumes.find((v: K) => v.name === mount?.name)
    t.equal(vol?.secret?.secretName, 'gatehouse-ca', 'from the Secret gatehouse-ca')
    t.equal(vol?.secret?.defaultMode, 0o440)
    t.equal(spec.securityContext.fsGroup, c.securityContext.runAsGroup, 'the key files are readable by the CA\'s group')
    for (const p of ['readinessProbe', 'livenessProbe']) {
      t.equal(c[p]?.httpGet?.scheme, 'HTTPS', `${p} over HTTPS`)
      t.equal(c[p]?.httpGet?.path, '/healthz', `${p} on /healthz`)
    }
    const podLabels = ca.spec.template.metadata.labels
    t.equal(ca.spec.template.metadata.annotations['gatehouse.io/inject'], 'disabled')

    const svc = find(base, 'Service', 'gatehouse-ca', NS)!
    t.ok(selects({ matchLabels: svc.spec.selector }, podLabels), 'Service selects the CA pods')
    t.same(svc.spec.ports.map((p: K) => [p.port, p.targetPort]), [[15443, 'https']])
    t.equal(c.ports.find((p: K) => p.name === 'https')?.containerPort, 15443)

    const pdb = find(base, 'PodDisruptionBudget', 'gatehouse-ca', NS)!
    t.ok(pdb, 'PodDisruptionBudget')
    t.equal(pdb.spec.minAvailable, 1)
    t.ok(selects(pdb.spec.selector, podLabels), 'PDB selects the CA pods')
    t.ok(pdb.spec.minAvailable < ca.spec.replicas, 'a drain can proceed one pod at a time')
  })

  t.test('RBAC: the CA may only get the JWKS; the injector has nothing', async t => {
    const roles = base.filter(d => d.kind === 'ClusterRole' || d.kind === 'Role')
    t.equal(roles.length, 1, 'one role in all')
    const role = roles[0]!
    t.equal(role.kind, 'ClusterRole')
    t.same(role.rules, [{ nonResourceURLs: ['/openid/v1/jwks', '/.well-known/openid-configuration'], verbs: ['get'] }], 'nonResourceURLs get only')
    for (const r of role.rules) {
      t.notOk('resources' in r || 'apiGroups' in r || 'resourceNames' in r, 'no resource access')
    }
    const bindings = base.filter(d => d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding')
    t.equal(bindings.length, 1)
    t.same(bindings[0]!.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name })
    t.same(bindings[0]!.subjects, [{ kind: 'ServiceAccount', name: 'gatehouse-ca', namespace: NS }])
    const injSa = find(base, 'ServiceAccount', 'gatehouse-injector', NS)
    t.equal(injSa?.automountServiceAccountToken, false)
    t.equal(podSpecOf(find(base, 'Deployment', 'gatehouse-injector', NS)!)?.automountServiceAccountToken, false, 'no API token in the injector')
  })

  t.test('injector: inject serve with real flags, Service, PDB, the image it injects', async t => {
    const inj = find(base, 'Deployment', 'gatehouse-injector', NS)!
    t.ok(inj)
    t.ok(inj.spec.replicas >= 2, 'at least 2 replicas (the webhook fails closed)')
    const c = podSpecOf(inj)!.containers[0]
    const args = gatehouseArgs(c)
    t.same(args.slice(0, 2), ['inject', 'serve'])
    t.same([args[2], args[4], args[6]], ['--listen', '--cert', '--key'], 'starts with --listen, --cert, --key')
    const env = envOf(c)
    const cfg = checkFlags(t, 'injector', 'inject serve', injectSchemas['inject serve'], args.slice(2), env) as K
    t.same(cfg.listen, { host: '0.0.0.0', port: 8443 })
    t.equal(cfg.bundleConfigmap, 'gatehouse-trust-bundle', 'the trust bundle ConfigMap name')
    t.equal(env.GATEHOUSE_IMAGE, c.image, 'injects its own image (images transformer, kustomizeconfig.yaml)')
    const ca = find(base, 'Service', 'gatehouse-ca', NS)!
    t.equal(cfg.caUrl, `https://${ca.metadata.name}.${ca.metadata.namespace}.svc:${ca.spec.ports[0].port}`, '--ca-url names the CA Service')
    const certDir = String(cfg.cert).replace(/\/[^/]+$/, '')
    const mount = c.volumeMounts.find((m: K) => m.mountPath === certDir)
    t.equal(mount?.readOnly, true)
    t.equal(podSpecOf(inj)!.volumes.find((v: K) => v.name === mount?.name)?.secret?.secretName, 'gatehouse-injector-tls')
    t.equal(c.readinessProbe.httpGet.scheme, 'HTTPS')

    const svc = find(base, 'Service', 'gatehouse-injector', NS)!
    t.ok(selects({ matchLabels: svc.spec.selector }, inj.spec.template.metadata.labels))
    const port = svc.spec.ports[0]
    t.equal(c.ports.find((p: K) => p.name === port.targetPort)?.containerPort, 8443, 'Service -> 8443')
    const pdb = find(base, 'PodDisruptionBudget', 'gatehouse-injector', NS)!
    t.ok(selects(pdb.spec.selector, inj.spec.template.metadata.labels), 'injector PDB')
  })

  t.test('webhook: /mutate, Fail, None, v1, timeout, selection', async t => {
    const hooks = base.filter(d => d.kind === 'MutatingWebhookConfiguration')
    t.equal(hooks.length, 1)
    const webhooks: K[] = hooks[0]!.webhooks
    t.equal(webhooks.length, 2)
    const svc = find(base, 'Service', 'gatehouse-injector', NS)!
    for (const w of webhooks) {
      t.same(w.clientConfig.service, { name: svc.metadata.name, namespace: NS, path: '/mutate', port: svc.spec.ports[0].port }, `${w.name}: the injector Service, /mutate`)
      t.equal(w.failurePolicy, 'Fail', `${w.name}: failurePolicy Fail`)
      t.equal(w.sideEffects, 'None', `${w.name}: sideEffects None`)
      t.same(w.admissionReviewVersions, ['v1'])
      t.ok(w.timeoutSeconds >= 1 && w.timeoutSeconds <= 10, `${w.name}: timeoutSeconds ${w.timeoutSeconds}`)
      t.equal(w.reinvocationPolicy, 'Never')
      t.same(w.rules, [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }], `${w.name}: pod creation only`)
    }
    // Which webhook sees which namespace: exactly one for an ordinary namespace, none for the system ones.
    const match = (labels: Record<string, string>): string[] => webhooks.filter(w => selects(w.namespaceSelector, labels)).map(w => w.name)
    t.same(match({ 'kubernetes.io/metadata.name': 'shop', 'gatehouse.io/inject': 'enabled' }), ['namespace.inject.gatehouse.io'])
    t.same(match({ 'kubernetes.io/metadata.name': 'shop' }), ['pod.inject.gatehouse.io'])
    t.same(match({ 'kubernetes.io/metadata.name': 'shop', 'gatehouse.io/inject': 'disabled' }), ['pod.inject.gatehouse.io'], 'pod annotation still works in a namespace labelled disabled')
    for (const sys of ['kube-system', NS]) t.same(match({ 'kubernetes.io/metadata.name': sys, 'gatehouse.io/inject': 'enabled' }), [], `${sys} is never sent to the injector`)
    const podHook = webhooks.find(w => w.name === 'pod.inject.gatehouse.io')!
    t.equal(podHook.matchConditions.length, 1)
    t.match(podHook.matchConditions[0].expression, /object\.metadata\.annotations\['gatehouse\.io\/inject'\] == 'enabled'/, 'only pods annotated for injection')
    t.notOk('caBundle' in webhooks[0]!.clientConfig, 'caBundle is left to the operator\'s overlay (README)')
  })

  t.test('NetworkPolicies', async t => {
    const pols = base.filter(d => d.kind === 'NetworkPolicy')
    const deny = pols.find(p => Object.keys(p.spec.podSelector).length === 0)
    t.same(deny?.spec.policyTypes, ['Ingress'], 'default deny ingress for the namespace')
    t.notOk(deny?.spec.ingress, 'with no allow rule')
    const forPods = (name: string): K[] => pols.filter(p => selects(p.spec.podSelector, find(base, 'Deployment', name, NS)!.spec.template.metadata.labels) && p.spec.ingress !== undefined)
    const caPol = forPods('gatehouse-ca')
    t.equal(caPol.length, 1)
    t.same(caPol[0]!.spec.ingress.flatMap((r: K) => r.ports), [{ protocol: 'TCP', port: 15443 }], 'CA: ingress on 15443 only')
    t.same(caPol[0]!.spec.ingress[0].from, [{ namespaceSelector: {} }], 'from pods in any namespace')
    const injPol = forPods('gatehouse-injector')
    t.equal(injPol.length, 1)
    t.same(injPol[0]!.spec.ingress.flatMap((r: K) => r.ports), [{ protocol: 'TCP', port: 8443 }], 'injector: ingress on 8443 only')
    t.same(injPol[0]!.spec.policyTypes, ['Ingress', 'Egress'])
    t.same(injPol[0]!.spec.egress, [], 'injector: no egress at all')
    t.ok(caPol[0]!.spec.policyTypes.includes('Egress'), 'CA egress restricted too')
  })

  t.test('every container is hardened and pinned', async t => {
    checkHardened(t, base, 'base')
    checkHardened(t, examples, 'examples')
    for (const d of [...base, ...examples].filter(d => d.kind === 'Deployment')) {
      t.equal(podSpecOf(d)!.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${d.metadata.name}: seccomp RuntimeDefault`)
    }
  })

  t.test('examples: orders -> payments, policies, routes, Services on 15006', async t => {
    for (const name of ['orders', 'payments']) {
      const dep = find(examples, 'Deployment', name, name)!
      t.ok(dep, `${name} Deployment`)
      t.equal(dep.spec.template.metadata.annotations['gatehouse.io/inject'], 'enabled', `${name} opts in`)
      const sa = podSpecOf(dep)!.serviceAccountName
      t.equal(sa, name)
      t.ok(find(examples, 'ServiceAccount', sa, name), `${name} ServiceAccount`)
      const svc = find(examples, 'Service', name, name)!
      t.same(svc.spec.ports.map((p: K) => p.targetPort), [15006], `${name} Service targets the sidecar port`)
      t.ok(selects({ matchLabels: svc.spec.selector }, dep.spec.template.metadata.labels))
      const cm = find(examples, 'ConfigMap', `${sa}-gatehouse-policy`, name)!
      t.ok(cm, `${sa}-gatehouse-policy`)
      t.doesNotThrow(() => parsePolicy(cm.data['policy.yaml'], 'policy.yaml'), `${name} policy is valid`)
    }
    // The payments policy allows exactly what orders does, checked by `gatehouse policy test`.
    const policyFile = join(work, 'payments-policy.yaml')
    writeFileSync(policyFile, find(examples, 'ConfigMap', 'payments-gatehouse-policy', 'payments')!.data['policy.yaml'])
    const casesFile = join(work, 'cases.yaml')
    const orders = 'spiffe://cluster.local/ns/orders/sa/orders'
    writeFileSync(casesFile, stringify([
      { caller: orders, method: 'POST', path: '/v1/charges', expect: 'allow' },
      { caller: orders, method: 'GET', path: '/v1/charges', expect: 'deny' },
      { caller: orders, method: 'POST', path: '/v1/refunds', expect: 'deny' },
      { caller: 'spiffe://cluster.local/ns/other/sa/orders', method: 'POST', path: '/v1/charges', expect: 'deny' }
    ]))
    const r = gatehouse(['policy', 'test', policyFile, '--cases', casesFile])
    t.equal(r.status, 0, r.stdout + r.stderr)

    const routesCm = find(examples, 'ConfigMap', 'orders-gatehouse-routes', 'orders')!
    t.ok(routesCm, 'routes ConfigMap for orders')
    const routes = parseRoutes(routesCm.data['routes.yaml'], 'routes.yaml', 'cluster.local')
    t.equal(routes.length, 1)
    const pay = find(examples, 'Service', 'payments', 'payments')!
    t.same(routes[0]!.address, { host: 'payments.payments.svc', port: pay.spec.ports[0].port }, 'route goes to the payments Service\'s sidecar port')
    t.equal(routes[0]!.id, `spiffe://cluster.local/ns/payments/sa/${podSpecOf(find(examples, 'Deployment', 'payments', 'payments')!)!.serviceAccountName}`)
    t.match(find(examples, 'Deployment', 'orders', 'orders')!.spec.template.spec.containers[0].args[0], /payments\.payments\.svc\/v1\/charges/, 'orders calls the routed host')
  })

  t.test('examples through the injector (offline, same flags as the webhook): a valid proxy, its ConfigMaps exist', async t => {
    const inj = find(base, 'Deployment', 'gatehouse-injector', NS)!
    const c = podSpecOf(inj)!.containers[0]
    const args = gatehouseArgs(c)
    // inject serve's injector flags, without its server flags (--listen/--cert/--key).
    const injectorFlags: string[] = []
    for (let i = 2; i < args.length; i += 2) if (!['--listen', '--cert', '--key'].includes(args[i]!)) injectorFlags.push(args[i]!, args[i + 1]!)
    const input = join(work, 'examples.yaml')
    writeFileSync(input, examples.map(d => stringify(d)).join('---\n'))
    const r = gatehouse(['inject', '--file', input, '--namespace-labels=', ...injectorFlags], envOf(c))
    t.equal(r.status, 0, `gatehouse inject exits 0${r.status === 0 ? '' : `: ${r.stderr}`}`)
    const out = parseAllDocuments(r.stdout).map(d => d.toJS() as K).filter(d => d !== null)
    checkHardened(t, out, 'injected')
    for (const name of ['orders', 'payments']) {
      const dep = find(out, 'Deployment', name, name)!
      const spec = podSpecOf(dep)!
      const proxy = (spec.initContainers ?? []).find((x: K) => x.name === 'gatehouse-proxy')
      t.ok(proxy, `${name}: proxy injected`)
      t.equal(proxy.image, c.image, `${name}: the injector's own image`)
      const cfg = checkFlags(t, `${name} proxy`, 'proxy', proxySchema, gatehouseArgs(proxy).slice(1)) as K
      t.same(cfg.inbound, { host: '0.0.0.0', port: 15006 }, `${name}: inbound on the port its Service targets`)
      for (const v of spec.volumes.filter((v: K) => v.configMap !== undefined)) {
        const cmName = v.configMap.name
        if (cmName === 'gatehouse-trust-bundle') continue // made by the operator from bundle.pem (README)
        const cm = find(examples, 'ConfigMap', cmName, name)
        if (cm === undefined && v.configMap.optional === true) continue // e.g. routes: a service that calls no one has none
        t.ok(cm, `${name}: mounted ConfigMap ${cmName} exists in the overlay`)
        for (const item of v.configMap.items ?? []) t.ok(item.key in (cm?.data ?? {}), `${name}: ${cmName} has key ${item.key}`)
      }
      t.ok(spec.volumes.some((v: K) => v.configMap?.name === 'gatehouse-trust-bundle'), `${name}: trust bundle from gatehouse-trust-bundle`)
    }
    for (const name of ['gatehouse-ca', 'gatehouse-injector']) {
      t.notOk(containersOf(find(out, 'Deployment', name, NS)!).some(x => x.name === 'gatehouse-proxy'), `${name} is never injected`)
    }
  })

  t.test('the README\'s operator overlay renders: image set once, caBundle on both webhooks', async t => {
    const readme = readFileSync(join(deployDir, 'README.md'), 'utf8')
    const block = /```yaml\n(# my-gatehouse\/kustomization\.yaml\n[\s\S]*?)```/.exec(readme)?.[1]
    t.ok(block, 'README has the overlay')
    const overlay = parseYaml(block!) as K
    const dir = join(work, 'my-gatehouse')
    mkdirSync(dir)
    overlay.resources = [relative(dir, deployDir)] // kustomize wants relative paths
    const caBundle = Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n').toString('base64')
    overlay.patches[0].patch = overlay.patches[0].patch.replaceAll('<base64 -w0 < ca/bundle.pem>', caBundle).replaceAll('<same>', caBundle)
    writeFileSync(join(dir, 'kustomization.yaml'), stringify(overlay))
    const docs = kustomize(dir)
    const want = `registry.example.com/gatehouse:${String(overlay.images[0].newTag)}`
    for (const name of ['gatehouse-ca', 'gatehouse-injector']) t.equal(podSpecOf(find(docs, 'Deployment', name, NS)!)!.containers[0].image, want, `${name} image`)
    t.equal(envOf(podSpecOf(find(docs, 'Deployment', 'gatehouse-injector', NS)!)!.containers[0]).GATEHOUSE_IMAGE, want, 'the injected proxy image follows')
    for (const w of find(docs, 'MutatingWebhookConfiguration', 'gatehouse-injector')!.webhooks) t.equal(w.clientConfig.caBundle, caBundle, `${w.name} caBundle`)
  })
})
