import { LineCounter, parseAllDocuments, stringify } from 'yaml'
import { InjectInvalidError } from '../errors.ts'
import type { InjectOptions } from './patch.ts'
import { injectObject, isInjectable, type ObjectResult } from './workload.ts'
import { arrayOr, isObject, objectOr, stringMap } from './shape.ts'
import { bypassWarnings } from './admission.ts'
import { ANNOTATION, FILE } from './injector-config.ts'

// `gatehouse inject` offline: a multi-document YAML stream in, the same stream out with Pods and
// workload templates injected. Documents that are not changed (Services, ConfigMaps, pods that did
// not opt in) are written back as parsed, comments included; changed ones are re-serialized.
// Besides the webhook's warnings, it can see the whole set: an injected workload whose policy
// ConfigMap is not in it is warned about (the webhook sees one pod at a time and cannot).

export type ManifestEntry = Pick<ObjectResult, 'ref' | 'kind' | 'injected' | 'reason' | 'detail' | 'warnings'>

export interface ManifestResult { text: string, entries: ManifestEntry[] }

const entry = (r: ObjectResult, opts: InjectOptions): ManifestEntry =>
  ({ ref: r.ref, kind: r.kind, injected: r.injected, reason: r.reason, detail: r.detail, warnings: [...r.warnings, ...(r.injected ? bypassWarnings(r.pod, opts.config) : [])] })

const namespaceOf = (obj: unknown): string | undefined => {
  const ns = objectOr(objectOr(obj).metadata).namespace
  return typeof ns === 'string' && ns !== '' ? ns : undefined
}

/** The policy ConfigMap an injected pod mounts, from the gatehouse.io/status the injector wrote. */
function policyOf (pod: unknown): string | undefined {
  try {
    const status = JSON.parse(stringMap(objectOr(objectOr(pod).metadata).annotations)[ANNOTATION.status] ?? '') as { policyConfigMap?: unknown }
    return typeof status.policyConfigMap === 'string' ? status.policyConfigMap : undefined
  } catch { return undefined }
}

export function injectManifest (text: string, opts: InjectOptions, source = 'stdin'): ManifestResult {
  const lineCounter = new LineCounter()
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false })
  if (!Array.isArray(docs)) return { text: '', entries: [] } // an empty stream
  const problems = docs.flatMap(d => d.errors.map((e) => {
    const { line, col } = lineCounter.linePos(e.pos[0])
    return `${source}:${line}:${col}: ${e.message.split('\n')[0]}`
  }))
  if (problems.length > 0) throw new InjectInvalidError(`cannot read the manifest:\n  - ${problems.join('\n  - ')}`)

  const entries: ManifestEntry[] = []
  const out: string[] = []
  const configMaps: Array<{ name: unknown, namespace: string | undefined }> = []
  const policies: Array<{ entry: ManifestEntry, policy: string, namespace: string | undefined }> = []
  const record = (r: ObjectResult): void => {
    const e = entry(r, opts)
    entries.push(e)
    const policy = r.injected ? policyOf(r.pod) : undefined
    if (policy !== undefined) policies.push({ entry: e, policy, namespace: namespaceOf(r.object) })
  }
  const noteConfigMap = (obj: unknown): void => {
    if (isObject(obj) && obj.kind === 'ConfigMap') configMaps.push({ name: objectOr(obj.metadata).name, namespace: namespaceOf(obj) })
  }
  for (const doc of docs) {
    const value: unknown = doc.toJS()
    if (value === null || value === undefined) continue // an empty document between two separators
    let changed: unknown
    if (isInjectable(value)) {
      const r = injectObject(value, opts)
      record(r)
      if (r.patch.length > 0) changed = r.object
    } else if (isObject(value) && value.kind === 'List' && Array.isArray(value.items)) {
      // `kubectl get -o yaml` output: inject the items.
      let any = false
      const items = arrayOr(value.items).map((item) => {
        noteConfigMap(item)
        if (!isInjectable(item)) return item
        const r = injectObject(item, opts)
        record(r)
        any ||= r.patch.length > 0
        return r.object
      })
      if (any) changed = { ...value, items }
    } else {
      noteConfigMap(value)
      const kind = isObject(value) && typeof value.kind === 'string' ? value.kind : 'document'
      const name = isObject(value) && isObject(value.metadata) && typeof value.metadata.name === 'string' ? value.metadata.name : '(unnamed)'
      entries.push({ ref: `${kind.toLowerCase()}/${name}`, kind, injected: false, reason: 'not-a-workload', detail: `${kind} has no pod template`, warnings: [] })
    }
    if (changed === undefined) {
      doc.directives.docStart = null // separators are written below, once
      out.push(String(doc))
    } else {
      out.push(stringify(changed, { lineWidth: 0, aliasDuplicateObjects: false }))
    }
  }
  for (const { entry: e, policy, namespace } of policies) {
    // A ConfigMap without a namespace lands in the same one as a workload without one (kubectl -n).
    if (configMaps.some(cm => cm.name === policy && (cm.namespace === undefined || namespace === undefined || cm.namespace === namespace))) continue
    e.warnings.push(`gatehouse: policy ConfigMap ${policy} (key ${FILE.policy}) is not in this manifest set: the pod stays in ContainerCreating until it exists in ${namespace === undefined ? 'the namespace it runs in' : `namespace ${namespace}`} (create it, or name another with ${ANNOTATION.policy}; the webhook cannot check this)`)
  }
  return { text: out.map(d => d.endsWith('\n') ? d : `${d}\n`).join('---\n'), entries }
}
