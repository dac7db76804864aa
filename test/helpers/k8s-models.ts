import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

// Any Kubernetes object checked against its model from the kubernetes-models family, as far as the
// API server's schema goes offline:
// 1. the generated validator of its kind (types, required fields, enums), found by apiVersion and
//    kind: kubernetes-models for the built-in kinds, @kubernetes-models/<package> for CRDs;
// 2. strict field names, like `kubectl apply --validate=strict`: the generated validators allow
//    unknown fields (a typo such as `renewbefore` would pass), so every key is also checked against
//    the field lists of the model's .d.ts files (generated from the same OpenAPI document or CRD),
//    recursively through nested types.

/** CRD API groups and the package whose models cover them. */
const CRD_MODELS: Record<string, string> = {
  'cert-manager.io': '@kubernetes-models/cert-manager',
  'trust.cert-manager.io': '@kubernetes-models/cert-manager',
  'monitoring.coreos.com': '@kubernetes-models/prometheus-operator'
}

/** The module of a kind's model, e.g. kubernetes-models/apps/v1/Deployment. */
export function modelModule (apiVersion: string, kind: string): string {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') as [string, string] : ['', apiVersion]
  if (group === '') return `kubernetes-models/${version}/${kind}`
  return `${CRD_MODELS[group] ?? 'kubernetes-models'}/${group}/${version}/${kind}`
}

interface TypeInfo { fields: Map<string, string | undefined> | undefined }
const cache = new Map<string, TypeInfo>()

/** A bare specifier's .d.ts, found like Node finds the package (nearest node_modules up), then by path: the models' export maps are path-for-path. */
function resolveDts (spec: string, fromDir: string): string | undefined {
  const parts = spec.split('/')
  const pkg = parts.slice(0, spec.startsWith('@') ? 2 : 1).join('/')
  const sub = parts.slice(pkg.split('/').length).join('/').replace(/\.m?js$/, '')
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const root = join(dir, 'node_modules', pkg)
    if (existsSync(root)) return [join(root, `${sub}.d.ts`), join(root, sub, 'index.d.ts')].find(f => existsSync(f))
    if (dirname(dir) === dir) return undefined
  }
}

/** Field name -> .d.ts file of its (element) type, or undefined for scalars, maps and unions. */
function typeInfo (dtsFile: string): TypeInfo {
  const hit = cache.get(dtsFile)
  if (hit !== undefined) return hit
  const text = readFileSync(dtsFile, 'utf8')
  const imports = new Map<string, string>()
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
    const [, name, spec] = m
    const file = spec!.startsWith('.') ? join(dirname(dtsFile), `${spec!.replace(/\.m?js$/, '')}.d.ts`) : resolveDts(spec!, dirname(dtsFile))
    if (file !== undefined) imports.set(name!, file)
  }
  const body = /^export interface \w+(?: extends [\w, ]+)? \{\n([\s\S]*?)^\}/m.exec(text)?.[1] ?? ''
  const fields = new Map<string, string | undefined>()
  for (const m of body.matchAll(/^ {4}"(\w+)"\??: (.+?);?$/gm)) {
    const type = m[2]!.replace(/^Array<(.+)>$/, '$1')
    fields.set(m[1]!, imports.get(type))
  }
  // An interface with no declared fields (FieldsV1), or a type alias (IntOrString), is free-form.
  const info = { fields: fields.size > 0 ? fields : undefined }
  cache.set(dtsFile, info)
  return info
}

/** Every key of value that the model (its .d.ts file) does not declare, as "at.path: unknown field". */
export function unknownFields (value: unknown, dtsFile: string, at: string, out: string[] = []): string[] {
  if (Array.isArray(value)) { value.forEach((v, i) => { unknownFields(v, dtsFile, `${at}[${i}]`, out) }); return out }
  if (typeof value !== 'object' || value === null) return out
  const { fields } = typeInfo(dtsFile)
  if (fields === undefined) return out
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) { out.push(`${at}.${k}: unknown field`); continue }
    const nested = fields.get(k)
    if (nested !== undefined) unknownFields(v, nested, `${at}.${k}`, out)
  }
  return out
}

/** Every problem the object's model finds (schema, then unknown fields); empty when it passes. No model for its kind is a problem too. */
export async function modelProblems (obj: Record<string, unknown>): Promise<string[]> {
  const spec = modelModule(String(obj.apiVersion), String(obj.kind))
  let url: string
  try { url = import.meta.resolve(spec) } catch { return [`no model for ${String(obj.apiVersion)} ${String(obj.kind)} (${spec})`] }
  const Model = (await import(url))[String(obj.kind)] as (new (data: unknown) => { validate: () => void }) | undefined
  if (Model === undefined) return [`${spec} exports no ${String(obj.kind)}`]
  const out: string[] = []
  try { new Model(structuredClone(obj)).validate() } catch (err) { out.push(`schema: ${(err as Error).message}`) }
  return unknownFields(obj, fileURLToPath(url).replace(/\.m?js$/, '.d.ts'), String(obj.kind), out)
}
