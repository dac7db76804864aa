import t from 'tap'
import fjp from 'fast-json-patch'
import { injectObject } from '../src/inject/workload.ts'
import { podProblems } from './helpers/k8s-pod.ts'

// Workloads are injected through their pod template; the patch addresses the template inside the
// workload, so it applies to the workload object as a whole, and the rest of the object is untouched.

const NS_ON = { namespaceLabels: { 'gatehouse.io/inject': 'enabled' } }
const template = (): any => ({ spec: { containers: [{ name: 'app', image: 'app:1', ports: [{ containerPort: 7000 }] }] } }) // no metadata: the patch must create it
const workloads: Array<[string, string, any, string[]]> = [
  ['apps/v1', 'Deployment', { replicas: 3, selector: { matchLabels: { app: 'a' } }, template: template() }, ['spec', 'template']],
  ['apps/v1', 'StatefulSet', { serviceName: 'a', selector: { matchLabels: { app: 'a' } }, template: template() }, ['spec', 'template']],
  ['apps/v1', 'DaemonSet', { selector: { matchLabels: { app: 'a' } }, template: template() }, ['spec', 'template']],
  ['apps/v1', 'ReplicaSet', { selector: { matchLabels: { app: 'a' } }, template: template() }, ['spec', 'template']],
  ['v1', 'ReplicationController', { selector: { app: 'a' }, template: template() }, ['spec', 'template']],
  ['batch/v1', 'Job', { backoffLimit: 2, template: { ...template(), spec: { ...template().spec, restartPolicy: 'Never' } } }, ['spec', 'template']],
  ['batch/v1', 'CronJob', { schedule: '*/5 * * * *', jobTemplate: { spec: { template: { ...template(), spec: { ...template().spec, restartPolicy: 'OnFailure' } } } } }, ['spec', 'jobTemplate', 'spec', 'template']]
]
const at = (obj: any, path: string[]): any => path.reduce((o, k) => o?.[k], obj)

t.test('every workload kind with a pod template', async t => {
  for (const [apiVersion, kind, spec, path] of workloads) {
    const obj = { apiVersion, kind, metadata: { name: 'a', namespace: 'shop' }, spec }
    const before = structuredClone(obj)
    const r = injectObject(obj, NS_ON)
    t.equal(r.injected, true, `${kind}: injected`)
    t.same(obj, before, `${kind}: input untouched`)
    t.ok(r.patch.every(op => op.path.startsWith(`/${path.join('/')}/`)), `${kind}: every op addresses the template at .${path.join('.')}`)
    t.same(fjp.applyPatch(structuredClone(obj), r.patch as fjp.Operation[], true, false).newDocument, r.object, `${kind}: the patch gives the returned object`)
    const tpl = at(r.object, path)
    t.same(podProblems({ apiVersion: 'v1', kind: 'Pod', metadata: tpl.metadata, spec: tpl.spec }), [], `${kind}: the template is a valid pod spec`)
    t.equal(tpl.spec.initContainers[0].args[tpl.spec.initContainers[0].args.indexOf('--upstream') + 1], '127.0.0.1:7000', `${kind}: upstream from the template's container`)
    const outside = structuredClone(r.object)
    const parent = at(outside, path.slice(0, -1))
    delete parent[path.at(-1)!]
    const outsideBefore = structuredClone(obj) as any
    delete at(outsideBefore, path.slice(0, -1))[path.at(-1)!]
    t.same(outside, outsideBefore, `${kind}: nothing outside the template changed`)
    t.match(injectObject(r.object, NS_ON), { injected: false, reason: 'already-injected', patch: [] }, `${kind}: a second pass is a no-op`)
  }
})

t.test('objects without a pod template pass through', async t => {
  for (const obj of [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 's' }, spec: { ports: [{ port: 80 }] } }, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' }, data: { a: 'b' } }]) {
    const r = injectObject(obj, NS_ON)
    t.match(r, { injected: false, reason: 'not-a-workload', patch: [] })
    t.same(r.object, obj)
  }
  t.throws(() => injectObject({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'd' }, spec: {} }, NS_ON), { code: 'GH_INJECT_INVALID', message: /no pod template at \.spec\.template/ })
})
