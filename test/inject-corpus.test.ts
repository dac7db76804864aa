import t from 'tap'
import { readdirSync } from 'node:fs'
import fjp from 'fast-json-patch'
import { corpusPath, readCorpusJson } from './helpers/corpora.ts'
import { startInjector } from './helpers/injector.ts'
import { podProblems } from './helpers/k8s-pod.ts'

// Every AdmissionReview of the corpus goes through the real webhook over HTTPS. The returned patch,
// applied with an independent RFC 6902 implementation, must give a pod that passes the Kubernetes
// schema (strict field names) and the API server's naming rules, holds exactly one proxy, keeps
// everything the pod had, and is left alone by a second pass through the webhook.

interface IndexEntry { file: string, features: { annotations: string[], hostNetwork: boolean } }
const index = readCorpusJson<{ files: IndexEntry[] }>('admission-review', 'index.json').files
const PROXY = 'gatehouse-proxy'
const OPT_IN = 'gatehouse.io/inject'

t.test('the index lists every review in the corpus', async t => {
  const onDisk = readdirSync(corpusPath('admission-review')).filter(f => f.endsWith('.json') && f !== 'index.json').sort()
  t.same(index.map(e => e.file).sort(), onDisk)
  t.equal(onDisk.length, 9)
})

const decodePatch = (b64: string): fjp.Operation[] => JSON.parse(Buffer.from(b64, 'base64').toString('utf8')) as fjp.Operation[]
const apply = (doc: unknown, ops: fjp.Operation[]): any => fjp.applyPatch(structuredClone(doc), ops, true, false).newDocument
const allContainers = (pod: any): any[] => [...(pod.spec.initContainers ?? []), ...pod.spec.containers]
/** A container with what injection may change (env, probe targets) taken out. */
const appPart = (c: any): any => {
  const { env: _env, livenessProbe, readinessProbe, startupProbe, ...rest } = c
  const probe = (p: any): any => p === undefined ? undefined : { ...p, httpGet: p.httpGet === undefined ? undefined : '(rewritable)' }
  return { ...rest, livenessProbe: probe(livenessProbe), readinessProbe: probe(readinessProbe), startupProbe: probe(startupProbe) }
}

t.test('every corpus review through the webhook', async t => {
  const injector = await startInjector(t)
  for (const { file, features } of index) {
    await t.test(file, async t => {
      const review = readCorpusJson('admission-review', file)
      // Opt in by the pod's annotation where the pod already has annotations (the patch then adds to
      // an existing map), and by the namespace label otherwise (the patch creates the map).
      const byAnnotation = features.annotations.length > 0
      if (byAnnotation) review.request.object.metadata.annotations[OPT_IN] = 'enabled'
      const route = byAnnotation ? '/mutate' : '/mutate/namespace-enabled'
      const original = structuredClone(review.request.object)

      const res = await injector.post(route, review)
      t.equal(res.status, 200)
      t.match(res.json, { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' })
      const response = res.json.response
      t.equal(response.uid, review.request.uid, 'uid echoed')
      t.equal(response.allowed, true, 'always allowed')
      t.equal(response.patchType, 'JSONPatch')
      const ops = decodePatch(response.patch)
      t.same(fjp.validate(ops, structuredClone(original)), undefined, 'the patch applies cleanly to the pod as sent')
      const patched = apply(original, ops)
      t.same(podProblems(patched), [], 'the patched pod passes the Pod schema and naming rules')

      const annotations = patched.metadata.annotations
      for (const [k, v] of Object.entries(original.metadata.annotations ?? {})) t.equal(annotations[k], v, `annotation ${k} kept`)

      if (features.hostNetwork) {
        t.equal(allContainers(patched).filter(c => c.name === PROXY).length, 0, 'no proxy in a hostNetwork pod')
        t.same(ops.map(o => o.path), ['/metadata/annotations'], 'the patch only records why')
        t.match(annotations['gatehouse.io/skip-reason'], /^hostNetwork pod/)
        t.notOk(annotations['gatehouse.io/status'])
        t.equal(response.warnings.length, 1)
        t.match(response.warnings[0], /not injected: hostNetwork/)
        t.same({ ...patched, metadata: { ...patched.metadata, annotations: undefined } }, { ...original, metadata: { ...original.metadata, annotations: undefined } }, 'nothing else changed')
      } else {
        // The only warnings: an app that may listen beyond loopback (a containerPort, 0.0.0.0; test/inject-warnings.test.ts).
        for (const w of response.warnings ?? []) t.match(w, /the pod IP reaches it around the sidecar/, 'no warning but the loopback one')
        t.equal(allContainers(patched).filter(c => c.name === PROXY).length, 1, 'exactly one proxy')
        const proxy = patched.spec.initContainers[0]
        t.equal(proxy.name, PROXY, 'the proxy is the first init container')
        t.equal(proxy.restartPolicy, 'Always', 'as a native sidecar')
        t.same(patched.spec.initContainers.slice(1), original.spec.initContainers ?? [], 'the original init containers follow, unchanged and in order')
        t.equal(patched.spec.containers.length, original.spec.containers.length, 'no container added to or removed from spec.containers')
        original.spec.containers.forEach((c: any, i: number) => {
          t.same(appPart(patched.spec.containers[i]), appPart(c), `container ${c.name} kept`)
          t.same(patched.spec.containers[i].env.slice(0, (c.env ?? []).length), c.env ?? [], `container ${c.name}: its env kept first`)
          t.equal(patched.spec.containers[i].env.find((e: any) => e.name === 'HTTP_PROXY')?.value, 'http://127.0.0.1:15001')
        })
        const volumes = original.spec.volumes ?? []
        t.same(patched.spec.volumes.slice(0, volumes.length), volumes, 'the original volumes kept, in order')
        t.same(patched.spec.volumes.slice(volumes.length).map((v: any) => v.name), ['gatehouse-token', 'gatehouse-policy', 'gatehouse-bundle', 'gatehouse-routes', 'gatehouse-decisions'])
        t.ok(annotations['gatehouse.io/status'], 'marked as injected')
      }
      // Everything outside spec and metadata.annotations is the pod's own.
      const { spec: _s, metadata: { annotations: _a, ...mdAfter }, ...restAfter } = patched
      const { spec: _s0, metadata: { annotations: _a0, ...mdBefore }, ...restBefore } = original
      t.same([mdAfter, restAfter], [mdBefore, restBefore], 'metadata and the rest untouched')

      // A second pass (e.g. reinvocationPolicy: IfNeeded, or a pod built from an injected template).
      const again = await injector.post(route, { ...review, request: { ...review.request, object: patched } })
      t.equal(again.status, 200)
      t.equal(again.json.response.allowed, true)
      t.notOk(again.json.response.patch, 'second injection: no patch')
      t.notOk(again.json.response.patchType)
      const decisions = injector.logs.filter(l => l.event === 'inject.decision' && l.uid === review.request.uid)
      t.match(decisions.at(-1), { injected: false, reason: features.hostNetwork ? 'host-network' : 'already-injected', ops: 0 })
      t.match(decisions.at(-2), { injected: !features.hostNetwork, ops: ops.length })
    })
  }
})

t.test('the pod check is not vacuous: it catches what a careless injector would produce', async t => {
  const review = readCorpusJson('admission-review', 'minimal-full-review.json')
  const injector = await startInjector(t)
  const res = await injector.post('/mutate/namespace-enabled', review)
  const good = apply(review.request.object, decodePatch(res.json.response.patch))
  t.same(podProblems(good), [])
  const broken = (edit: (pod: any) => void): string[] => { const p = structuredClone(good); edit(p); return podProblems(p) }
  t.match(broken(p => { p.spec.initContainers[0].restartpolicy = 'Always' }), [/unknown field/], 'a misspelt field')
  t.match(broken(p => { p.spec.initContainers[0].startupProbe.httpGet.port = undefined }), [/must have required property .?port/], 'a probe without a port')
  t.match(broken(p => { p.spec.volumes.push({ ...p.spec.volumes.at(-1) }) }), [/duplicate name gatehouse-decisions/], 'a volume added twice')
  t.match(broken(p => { p.spec.containers[0].restartPolicy = 'Always' }), [/only on init containers/], 'restartPolicy on an app container')
  t.match(broken(p => { p.spec.initContainers[0].volumeMounts[0].name = 'missing' }), [/no volume named missing/], 'a mount without its volume')
  t.match(broken(p => { p.spec.initContainers[0].ports[0].name = 'gatehouse-inbound-port' }), [/not an IANA service name/], 'a port name over 15 characters')
  t.match(broken(p => { p.metadata.annotations['gatehouse.io/status'] = { injected: true } }), [/must be string/], 'a non-string annotation')
})
