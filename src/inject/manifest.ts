import { LineCounter, parseAllDocuments, stringify } from 'yaml'
import { InjectInvalidError } from './errors.ts'
import type { InjectOptions } from './patch.ts'
import { injectObject, isInjectable, type ObjectResult } from './workload.ts'
import { arrayOr, isObject } from './shape.ts'

// `gatehouse inject` offline: a multi-document YAML stream in, the same stream out with Pods and
// workload templates injected. Documents that are not changed (Services, ConfigMaps, pods that did
// not opt in) are written back as parsed, comments included; changed ones are re-serialized.

export type ManifestEntry = Pick<ObjectResult, 'ref' | 'kind' | 'injected' | 'reason' | 'detail' | 'warnings'>

export interface ManifestResult { text: string, entries: ManifestEntry[] }

const entry = (r: ObjectResult): ManifestEntry => ({ ref: r.ref, kind: r.kind, injected: r.injected, reason: r.reason, detail: r.detail, warnings: r.warnings })

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
  for (const doc of docs) {
    const value: unknown = doc.toJS()
    if (value === null || value === undefined) continue // an empty document between two separators
    let changed: unknown
    if (isInjectable(value)) {
      const r = injectObject(value, opts)
      entries.push(entry(r))
      if (r.patch.length > 0) changed = r.object
    } else if (isObject(value) && value.kind === 'List' && Array.isArray(value.items)) {
      // `kubectl get -o yaml` output: inject the items.
      let any = false
      const items = arrayOr(value.items).map((item) => {
        if (!isInjectable(item)) return item
        const r = injectObject(item, opts)
        entries.push(entry(r))
        any ||= r.patch.length > 0
        return r.object
      })
      if (any) changed = { ...value, items }
    } else {
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
  return { text: out.map(d => d.endsWith('\n') ? d : `${d}\n`).join('---\n'), entries }
}
