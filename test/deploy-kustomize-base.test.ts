import t from 'tap'
import { caSchemas } from '../src/cli/ca.ts'
import { injectSchemas } from '../src/cli/inject.ts'
import { renderDeploy, skipWithoutKubectl, NS, find, podSpecOf, gatehouseArgs, checkFlags, envOf, selects, checkHardened, type K8sObject as K } from './helpers/k8s-pod.ts'

// deploy/ renders with kubectl's kustomize, and what it renders is what the README and the issue
// promise for the base: the objects, their security settings, least-privilege RBAC, the webhook's
// choices, and `gatehouse` arguments that the CLI actually accepts. The examples and the operator
// overlay: deploy-kustomize-examples.test.ts. Shared rendering and checks: helpers/k8s-pod.ts.

t.test('kubectl kustomize deploy/: the objects, their flags, RBAC, webhook, network policies, hardening', { skip: skipWithoutKubectl }, async t => {
  const { base, examples } = renderDeploy()

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

  t.test('RBAC: the CA may get the JWKS and publish its bundle; the injector has nothing', async t => {
    const roles = base.filter(d => d.kind === 'ClusterRole' || d.kind === 'Role')
    // The publisher's role, rule by rule: deploy-certificates.test.ts.
    t.same(roles.map(r => `${String(r.kind)}/${String(r.metadata.name)}`).sort(), ['ClusterRole/gatehouse-ca-jwks-reader', 'ClusterRole/gatehouse-ca-publisher'], 'two roles in all')
    const role = find(base, 'ClusterRole', 'gatehouse-ca-jwks-reader')!
    t.same(role.rules, [{ nonResourceURLs: ['/openid/v1/jwks', '/.well-known/openid-configuration'], verbs: ['get'] }], 'nonResourceURLs get only')
    for (const r of role.rules) {
      t.notOk('resources' in r || 'apiGroups' in r || 'resourceNames' in r, 'no resource access')
    }
    const bindings = base.filter(d => d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding')
    t.equal(bindings.length, 2, 'one binding per role')
    for (const r of roles) {
      const b = bindings.filter(b => b.roleRef.name === r.metadata.name)
      t.equal(b.length, 1, `${String(r.metadata.name)}: one binding`)
      t.same(b[0]?.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: r.metadata.name })
      t.same(b[0]?.subjects, [{ kind: 'ServiceAccount', name: 'gatehouse-ca', namespace: NS }], `${String(r.metadata.name)}: the CA only`)
    }
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
    // Its serving certificate comes from the CA (deploy-certificates.test.ts checks how).
    t.same([args[2], args[4], args[6]], ['--listen', '--k8s-token-file', '--trust-bundle'], 'starts with --listen, --k8s-token-file, --trust-bundle')
    const env = envOf(c)
    const cfg = checkFlags(t, 'injector', 'inject serve', injectSchemas['inject serve'], args.slice(2), env) as K
    t.same(cfg.listen, { host: '0.0.0.0', port: 8443 })
    t.equal(cfg.bundleConfigmap, 'gatehouse-trust-bundle', 'the trust bundle ConfigMap name')
    t.equal(env.GATEHOUSE_IMAGE, c.image, 'injects its own image (images transformer, kustomizeconfig.yaml)')
    const ca = find(base, 'Service', 'gatehouse-ca', NS)!
    t.equal(cfg.caUrl, `https://${ca.metadata.name}.${ca.metadata.namespace}.svc:${ca.spec.ports[0].port}`, '--ca-url names the CA Service')
    t.equal(cfg.cert, undefined, 'no --cert')
    t.equal(cfg.key, undefined, 'no --key')
    for (const file of [cfg.k8sTokenFile, cfg.trustBundle]) {
      const mount = c.volumeMounts.find((m: K) => String(file).startsWith(`${String(m.mountPath)}/`))
      t.equal(mount?.readOnly, true, `${String(file)} is on a read-only mount`)
    }
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
    for (const w of webhooks) t.notOk('caBundle' in w.clientConfig, `${w.name}: no caBundle in the manifest: the CA keeps it (--webhook-ca-bundle), and apply never resets it`)
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
    // Out: DNS, and the CA for its serving certificate; never the API server.
    t.same(injPol[0]!.spec.egress.flatMap((r: K) => r.ports), [{ protocol: 'UDP', port: 53 }, { protocol: 'TCP', port: 53 }, { protocol: 'TCP', port: 15443 }], 'injector: egress to DNS and port 15443 only')
    const toCa = injPol[0]!.spec.egress.find((r: K) => r.ports.some((p: K) => p.port === 15443))
    t.same(toCa.to.length, 1)
    t.ok(selects(toCa.to[0].podSelector, find(base, 'Deployment', 'gatehouse-ca', NS)!.spec.template.metadata.labels), '15443: to the CA pods')
    t.notOk('namespaceSelector' in toCa.to[0] || 'ipBlock' in toCa.to[0], '15443: in gatehouse-system only')
    t.ok(caPol[0]!.spec.policyTypes.includes('Egress'), 'CA egress restricted too')
  })

  t.test('every container is hardened and pinned', async t => {
    checkHardened(t, base, 'base')
    checkHardened(t, examples, 'examples')
    for (const d of [...base, ...examples].filter(d => d.kind === 'Deployment')) {
      t.equal(podSpecOf(d)!.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${d.metadata.name}: seccomp RuntimeDefault`)
    }
  })
})
