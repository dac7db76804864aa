import t from 'tap'
import { readFileSync } from 'node:fs'
import { injectPod } from '../src/inject/patch.ts'
import { sidecarNodeOptions, sidecarProcessEnv } from '../src/inject/node-options.ts'
import { optedInPod as pod } from './helpers/k8s-pod.ts'

// The sidecar's heap sizes follow its memory limit: the injector sets NODE_OPTIONS from the pod's
// limit, the image's default matches the injector's default limit, and the bench runs with the same.
// So does the glibc malloc arena cap.


const envOf = (annotations: Record<string, string>, name: string): unknown => {
  const r = injectPod(pod(annotations), { namespaceLabels: {} }) as { pod: any }
  const proxy = [...(r.pod.spec.initContainers ?? []), ...r.pod.spec.containers].find((c: any) => c.name === 'gatehouse-proxy')
  return proxy?.env?.find((e: any) => e.name === name)?.value
}
const nodeOptionsOf = (annotations: Record<string, string>): unknown => envOf(annotations, 'NODE_OPTIONS')

t.test('old space at 3/4 of the memory limit, a 2 MiB young generation', async t => {
  t.equal(sidecarNodeOptions('256Mi'), '--max-semi-space-size=8 --max-old-space-size=192')
  t.equal(sidecarNodeOptions('1Gi'), '--max-semi-space-size=8 --max-old-space-size=768')
  t.equal(sidecarNodeOptions('500M'), '--max-semi-space-size=8 --max-old-space-size=357')
  t.equal(sidecarNodeOptions('32Mi'), '--max-semi-space-size=8 --max-old-space-size=64', 'never below 64 MiB')
  t.equal(sidecarNodeOptions(), sidecarNodeOptions('256Mi'), 'default: the injector\'s default limit')
})

t.test('the injected proxy gets NODE_OPTIONS from its memory limit', async t => {
  t.equal(nodeOptionsOf({}), '--max-semi-space-size=8 --max-old-space-size=192', 'default limit 256Mi')
  t.equal(nodeOptionsOf({ 'gatehouse.io/proxy-memory-limit': '512Mi' }), '--max-semi-space-size=8 --max-old-space-size=384', 'annotation proxy-memory-limit 512Mi')
})

t.test('the injected proxy caps glibc malloc arenas at 2', async t => {
  t.equal(envOf({}, 'MALLOC_ARENA_MAX'), '2')
  t.equal(envOf({ 'gatehouse.io/proxy-memory-limit': '1Gi' }, 'MALLOC_ARENA_MAX'), '2', 'whatever the limit')
  t.same(sidecarProcessEnv('512Mi'), { NODE_OPTIONS: sidecarNodeOptions('512Mi'), MALLOC_ARENA_MAX: '2' })
})

t.test('the image\'s default environment is the injector\'s default', async t => {
  const dockerfile = readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8')
  const runtime = dockerfile.slice(dockerfile.indexOf('AS runtime'))
  t.match(runtime, `ENV NODE_OPTIONS="${sidecarNodeOptions()}"`)
  t.match(runtime, `ENV MALLOC_ARENA_MAX=${sidecarProcessEnv().MALLOC_ARENA_MAX}`)
})
