import t from 'tap'
import { injectPod } from '../src/inject/patch.ts'
import { startInjector } from './helpers/injector.ts'

// Who gets a sidecar: the pod's annotation gatehouse.io/inject, or its namespace's label
// gatehouse.io/inject=enabled; "disabled" on the pod wins; everyone else is left exactly as they were.

const NS_ON = { 'gatehouse.io/inject': 'enabled' }
const pod = (annotations?: Record<string, string>): any => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web', namespace: 'shop', ...(annotations === undefined ? {} : { annotations }) },
  spec: { containers: [{ name: 'web', image: 'web:1', ports: [{ containerPort: 8080 }] }] }
})
const proxies = (p: any): number => (p.spec.initContainers ?? []).filter((c: any) => c.name === 'gatehouse-proxy').length

t.test('the rules', async t => {
  // [case, pod annotations, namespace labels, injected, reason (or, when injected, who opted in)]
  const cases: Array<[string, Record<string, string> | undefined, Record<string, string>, boolean, string]> = [
    ['pod annotation enabled, namespace not labelled', { 'gatehouse.io/inject': 'enabled' }, {}, true, 'pod annotation'],
    ['namespace label enabled, no pod annotation', undefined, NS_ON, true, 'namespace label'],
    ['both', { 'gatehouse.io/inject': 'enabled' }, NS_ON, true, 'pod annotation'],
    ['pod annotation disabled wins over the namespace label', { 'gatehouse.io/inject': 'disabled' }, NS_ON, false, 'disabled-by-annotation'],
    ['pod annotation disabled, namespace not labelled', { 'gatehouse.io/inject': 'disabled' }, {}, false, 'disabled-by-annotation'],
    ['neither', undefined, {}, false, 'not-opted-in'],
    ['other annotations only', { team: 'shop' }, { team: 'shop' }, false, 'not-opted-in'],
    ['namespace label with another value', undefined, { 'gatehouse.io/inject': 'disabled' }, false, 'not-opted-in'],
    ['namespace label "true" is not "enabled"', undefined, { 'gatehouse.io/inject': 'true' }, false, 'not-opted-in'],
    ['pod annotation enabled in a namespace labelled disabled: the pod asked', { 'gatehouse.io/inject': 'enabled' }, { 'gatehouse.io/inject': 'disabled' }, true, 'pod annotation']
  ]
  for (const [name, annotations, nsLabels, injected, reason] of cases) {
    const input = pod(annotations)
    const before = structuredClone(input)
    const r = injectPod(input, { namespaceLabels: nsLabels })
    t.equal(r.injected, injected, `${name}: ${injected ? 'injected' : 'not injected'}`)
    if (injected) t.match(r, { reason: 'injected', detail: new RegExp(`^${reason} `) }, `${name}: opted in by the ${reason}`)
    else t.equal(r.reason, reason, `${name}: reason ${reason}`)
    t.equal(proxies(r.pod), injected ? 1 : 0, `${name}: ${injected ? 'one proxy' : 'no proxy'}`)
    t.same(input, before, `${name}: the input object is not modified`)
    if (!injected) {
      t.same(r.patch, [], `${name}: empty patch`)
      t.same(r.pod, input, `${name}: pod untouched`)
      t.same(r.warnings, [], `${name}: no warnings`)
    }
  }
})

t.test('an opt-in value that is neither enabled nor disabled: untouched, with a warning naming the two words', async t => {
  for (const value of ['true', 'Enabled', '']) {
    const r = injectPod(pod({ 'gatehouse.io/inject': value }), { namespaceLabels: NS_ON })
    t.equal(r.injected, false)
    t.equal(r.reason, 'invalid-annotation')
    t.same(r.patch, [])
    t.match(r.warnings, [/must be "enabled" or "disabled"/])
  }
})

t.test('a pod that did not opt in is never refused nor inspected, however odd it is', async t => {
  for (const odd of [{ kind: 'Pod' }, { metadata: { name: 'x' }, spec: { containers: 'nope' } }, { spec: { hostNetwork: true, containers: [] } }]) {
    const r = injectPod(odd, {})
    t.equal(r.reason, 'not-opted-in')
    t.same(r.patch, [])
    t.same(r.pod, odd)
  }
  t.throws(() => injectPod({ metadata: { annotations: { 'gatehouse.io/inject': 'enabled' } }, spec: { containers: 'nope' } }), { code: 'GH_INJECT_INVALID' }, 'an opted-in pod the injector cannot read is an error of the pure function (the webhook turns it into a warning)')
})

t.test('the webhook: /mutate knows only the pod annotation; /mutate/namespace-enabled stands for the namespace label', async t => {
  const injector = await startInjector(t)
  const review = (object: any, uid: string): any => ({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid, kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, namespace: 'shop', operation: 'CREATE', object } })
  const plain = await injector.post('/mutate', review(pod(), 'u1'))
  t.same(plain.json.response, { uid: 'u1', allowed: true }, 'not opted in: allowed, no patch, no warning')
  const ns = await injector.post('/mutate/namespace-enabled', review(pod(), 'u2'))
  t.equal(ns.json.response.patchType, 'JSONPatch', 'namespace label: injected')
  const disabled = await injector.post('/mutate/namespace-enabled', review(pod({ 'gatehouse.io/inject': 'disabled' }), 'u3'))
  t.same(disabled.json.response, { uid: 'u3', allowed: true }, 'disabled wins over the namespace route')
  const annotated = await injector.post('/mutate', review(pod({ 'gatehouse.io/inject': 'enabled' }), 'u4'))
  t.equal(annotated.json.response.patchType, 'JSONPatch', 'pod annotation: injected')
  t.match(injector.logs.filter(l => l.event === 'inject.decision').map(l => [l.uid, l.reason]), [['u1', 'not-opted-in'], ['u2', 'injected'], ['u3', 'disabled-by-annotation'], ['u4', 'injected']], 'one log line per decision')
})
