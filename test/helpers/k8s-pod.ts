import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { parseAllDocuments } from 'yaml'
import { loadConfig, type Schema } from '../../src/config.ts'
import { Pod } from 'kubernetes-models/v1'
import { unknownFields } from './k8s-models.ts'

// Checks a pod the way the API server would, as far as can be done offline:
// 1. the Kubernetes OpenAPI schema, via kubernetes-models' generated validator (types, required
//    fields, enums);
// 2. strict field names, like `kubectl apply --validate=strict`: the generated validator allows
//    unknown fields, so every key is also checked against the field lists of the model's .d.ts
//    files (generated from the same OpenAPI document), recursively through nested types
//    (helpers/k8s-models.ts, which checks any object, CRDs included);
// 3. the API server's semantic checks that bear on injection: unique names (volumes, init
//    containers, env per container, port names per container), volume mounts that refer to a volume,
//    restartPolicy only on init containers, port names as IANA service names.

const require = createRequire(import.meta.url)

const IANA_SVC_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$/

const dupes = (names: unknown[]): string[] => names.filter((n, i) => names.indexOf(n) !== i).map(String)

function semantic (pod: any): string[] {
  const out: string[] = []
  const spec = pod.spec ?? {}
  const containers: any[] = spec.containers ?? []
  const inits: any[] = spec.initContainers ?? []
  const volumes: any[] = spec.volumes ?? []
  for (const d of dupes(volumes.map(v => v.name))) out.push(`spec.volumes: duplicate name ${d}`)
  for (const d of dupes(inits.map(c => c.name))) out.push(`spec.initContainers: duplicate name ${d}`)
  for (const d of dupes(containers.map(c => c.name))) out.push(`spec.containers: duplicate name ${d}`)
  const volumeNames = new Set(volumes.map(v => v.name))
  for (const [field, list] of [['containers', containers], ['initContainers', inits]] as const) {
    list.forEach((c, i) => {
      const at = `spec.${field}[${i}]`
      for (const d of dupes((c.env ?? []).map((e: any) => e.name))) out.push(`${at}.env: duplicate name ${d}`)
      const portNames = (c.ports ?? []).map((p: any) => p.name).filter((n: unknown) => n !== undefined)
      for (const d of dupes(portNames)) out.push(`${at}.ports: duplicate name ${d}`)
      for (const n of portNames) if (!IANA_SVC_NAME.test(n)) out.push(`${at}.ports: ${n} is not an IANA service name`)
      for (const m of c.volumeMounts ?? []) if (!volumeNames.has(m.name)) out.push(`${at}.volumeMounts: no volume named ${m.name}`)
      if (c.restartPolicy !== undefined && (field === 'containers' || c.restartPolicy !== 'Always')) out.push(`${at}.restartPolicy: only "Always", and only on init containers`)
    })
  }
  for (const [k, v] of Object.entries(pod.metadata?.annotations ?? {})) if (typeof v !== 'string') out.push(`metadata.annotations.${k}: not a string`)
  return out
}

/** Every problem found; empty when the pod passes all three checks. */
export function podProblems (pod: unknown): string[] {
  const out: string[] = []
  try { new Pod(structuredClone(pod) as never).validate() } catch (err) { out.push(`schema: ${(err as Error).message}`) }
  unknownFields(pod, require.resolve('kubernetes-models/v1/Pod').replace(/\.js$/, '.d.ts'), 'pod', out)
  out.push(...semantic(pod))
  return out
}

/** The payments pod of the inject tests, opted in, with extra annotations. */
export const optedInPod = (annotations: Record<string, string>): Record<string, unknown> => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'payments', namespace: 'shop', annotations: { 'gatehouse.io/inject': 'enabled', ...annotations } },
  spec: { serviceAccountName: 'payments', containers: [{ name: 'app', image: 'payments:1', ports: [{ containerPort: 8080 }] }] }
})

// ---------------------------------------------------------------------------------------------
// deploy/ rendered by kubectl's kustomize (test/deploy-kustomize-*.test.ts): the objects, their pod
// specs and containers, `gatehouse` arguments checked against the CLI's flags, and hardening checks.

/* eslint-disable @typescript-eslint/no-explicit-any */
export type K8sObject = Record<string, any>
type K = K8sObject

const repo = fileURLToPath(new URL('../..', import.meta.url))
export const deployDir = join(repo, 'deploy')
const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' })
/** The skip option of a test that renders deploy/: a reason when kubectl is not installed. */
export const skipWithoutKubectl: string | false = kubectl.error !== undefined || kubectl.status !== 0 ? 'kubectl is not installed: cannot render deploy/ (install kubectl to run this test)' : false
export const NS = 'gatehouse-system'

/** `kubectl kustomize dir`, parsed. */
export function kustomize (dir: string): K[] {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 })
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${r.stderr}`)
  return parseAllDocuments(r.stdout).map(d => d.toJS() as K).filter(d => d !== null)
}

export const find = (docs: K[], kind: string, name: string, namespace?: string): K | undefined =>
  docs.find(d => d.kind === kind && d.metadata?.name === name && (namespace === undefined || d.metadata?.namespace === namespace))

export const podSpecOf = (d: K): K | undefined =>
  d.kind === 'Pod' ? d.spec : d.kind === 'CronJob' ? d.spec?.jobTemplate?.spec?.template?.spec : d.spec?.template?.spec

export const containersOf = (d: K): K[] => {
  const spec = podSpecOf(d)
  return spec === undefined ? [] : [...(spec.initContainers ?? []), ...(spec.containers ?? [])]
}

/** The args of a container as gatehouse receives them (the image's entrypoint is `gatehouse`). */
export function gatehouseArgs (c: K): string[] {
  return c.command === undefined ? (c.args ?? []) : []
}

/** Flags given to a `gatehouse` subcommand must be real flags of it, with valid values. */
export function checkFlags (t: Test, what: string, command: string, schema: Schema, argv: string[], env: Record<string, string> = {}): ReturnType<typeof loadConfig> {
  const names = argv.filter(a => a.startsWith('--')).map(a => a.slice(2).split('=')[0]!)
  for (const n of names) t.ok(n in schema, `${what}: --${n} is a flag of 'gatehouse ${command}'`)
  for (const e of Object.keys(env)) t.ok(Object.keys(schema).some(n => `GATEHOUSE_${n.replace(/-/g, '_').toUpperCase()}` === e), `${what}: env ${e} is a flag of 'gatehouse ${command}'`)
  // loadConfig checks every value too, and reports every problem at once.
  return loadConfig(command, schema, { argv, env })
}

export const envOf = (c: K): Record<string, string> =>
  Object.fromEntries((c.env ?? []).filter((e: K) => typeof e.name === 'string' && e.name.startsWith('GATEHOUSE_') && typeof e.value === 'string').map((e: K) => [e.name, e.value]))

/** matchExpressions of a label selector, evaluated (In, NotIn, Exists, DoesNotExist). */
export function selects (selector: K | undefined, labels: Record<string, string>): boolean {
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

export function checkHardened (t: Test, docs: K[], label: string): void {
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

/** deploy/ and deploy/examples, rendered. */
export function renderDeploy (): { base: K[], examples: K[] } {
  return { base: kustomize(deployDir), examples: kustomize(join(deployDir, 'examples')) }
}
