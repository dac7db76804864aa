import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { Pod } from 'kubernetes-models/v1'

// Checks a pod the way the API server would, as far as can be done offline:
// 1. the Kubernetes OpenAPI schema, via kubernetes-models' generated validator (types, required
//    fields, enums);
// 2. strict field names, like `kubectl apply --validate=strict`: the generated validator allows
//    unknown fields, so every key is also checked against the field lists of the model's .d.ts
//    files (generated from the same OpenAPI document), recursively through nested types;
// 3. the API server's semantic checks that bear on injection: unique names (volumes, init
//    containers, env per container, port names per container), volume mounts that refer to a volume,
//    restartPolicy only on init containers, port names as IANA service names.

const require = createRequire(import.meta.url)

interface TypeInfo { fields: Map<string, string | undefined> | undefined }
const cache = new Map<string, TypeInfo>()

/** Field name -> .d.ts file of its (element) type, or undefined for scalars, maps and unions. */
function typeInfo (dtsFile: string): TypeInfo {
  const hit = cache.get(dtsFile)
  if (hit !== undefined) return hit
  const text = readFileSync(dtsFile, 'utf8')
  const imports = new Map<string, string>()
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
    const [, name, spec] = m
    const file = spec!.startsWith('.') ? join(dirname(dtsFile), `${spec}.d.ts`) : require.resolve(spec!, { paths: [dirname(dtsFile)] }).replace(/\.js$/, '.d.ts')
    imports.set(name!, file)
  }
  const body = /^export interface \w+(?: extends [\w, ]+)? \{\n([\s\S]*?)^\}/m.exec(text)?.[1] ?? ''
  const fields = new Map<string, string | undefined>()
  for (const m of body.matchAll(/^ {4}"(\w+)"\??: (.+?);?$/gm)) {
    const type = m[2]!.replace(/^Array<(.+)>$/, '$1')
    fields.set(m[1]!, imports.get(type))
  }
  // An interface with no declared fields (FieldsV1) is free-form.
  const info = { fields: fields.size > 0 ? fields : undefined }
  cache.set(dtsFile, info)
  return info
}

function unknownFields (value: unknown, dtsFile: string, at: string, out: string[]): void {
  if (Array.isArray(value)) { value.forEach((v, i) => { unknownFields(v, dtsFile, `${at}[${i}]`, out) }); return }
  if (typeof value !== 'object' || value === null) return
  const { fields } = typeInfo(dtsFile)
  if (fields === undefined) return
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) { out.push(`${at}.${k}: unknown field`); continue }
    const nested = fields.get(k)
    if (nested !== undefined) unknownFields(v, nested, `${at}.${k}`, out)
  }
}

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
