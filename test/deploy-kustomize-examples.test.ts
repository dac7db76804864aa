import t from 'tap'
import { writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAllDocuments, parse as parseYaml, stringify } from 'yaml'
import { proxySchema } from '../src/cli/proxy.ts'
import { injectSchemas } from '../src/cli/inject.ts'
import { parsePolicy } from '../src/policy/load.ts'
import { parseRoutes } from '../src/proxy/routes.ts'
import { gatehouse } from './helpers/run-cli.ts'
import { renderDeploy, skipWithoutKubectl, NS, deployDir, find, podSpecOf, containersOf, gatehouseArgs, checkFlags, envOf, selects, checkHardened, type K8sObject as K } from './helpers/k8s-pod.ts'
import { tempDir } from './helpers/files.ts'
import { renderOverlay } from './helpers/kustomize.ts'

// deploy/examples and the README's operator overlay render with kubectl's kustomize, and what they
// render works: the examples' policies and routes pass `gatehouse policy test` and parse, the
// examples go through the injector with the webhook's flags, and the overlay sets the image once.
// The base objects: deploy-kustomize-base.test.ts. Shared rendering and checks: helpers/k8s-pod.ts.

t.test('kubectl kustomize deploy/examples and the README overlay: policies, routes, the injector, the image', { skip: skipWithoutKubectl }, async t => {
  const { base, examples } = renderDeploy()
  const work = tempDir(t, 'gh-deploy-')

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
    // inject serve's injector flags, without its server flags (--listen, its certificate's): those `inject` has too.
    const injectorFlags: string[] = []
    for (let i = 2; i < args.length; i += 2) if (args[i]!.slice(2) in injectSchemas.inject) injectorFlags.push(args[i]!, args[i + 1]!)
    t.ok(injectorFlags.includes('--bundle-configmap'), 'the injector flags are passed on')
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
        if (cmName === 'gatehouse-trust-bundle') continue // published by the CA (README, step 3; deploy-certificates.test.ts)
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

  t.test('the README\'s operator overlay renders: image set once, no caBundle to add', async t => {
    const readme = readFileSync(join(deployDir, 'README.md'), 'utf8')
    const block = /```yaml\n(# my-gatehouse\/kustomization\.yaml\n[\s\S]*?)```/.exec(readme)?.[1]
    t.ok(block, 'README has the overlay')
    const { resources, apiVersion, kind, ...overlay } = parseYaml(block!) as K
    t.same([apiVersion, kind, resources.length], ['kustomize.config.k8s.io/v1beta1', 'Kustomization', 1], 'a kustomization of deploy/')
    t.notOk('patches' in overlay, 'no patch: the CA keeps the webhook\'s caBundle')
    const docs = renderOverlay(t, { fields: overlay }) // with deploy/ as its resource, by a path relative to it
    const want = `registry.example.com/gatehouse:${String(overlay.images[0].newTag)}`
    for (const name of ['gatehouse-ca', 'gatehouse-injector']) t.equal(podSpecOf(find(docs, 'Deployment', name, NS)!)!.containers[0].image, want, `${name} image`)
    t.equal(envOf(podSpecOf(find(docs, 'Deployment', 'gatehouse-injector', NS)!)!.containers[0]).GATEHOUSE_IMAGE, want, 'the injected proxy image follows')
    for (const w of find(docs, 'MutatingWebhookConfiguration', 'gatehouse-injector')!.webhooks) t.notOk('caBundle' in w.clientConfig, `${w.name}: caBundle left to the CA`)
  })
})
