import { ANNOTATION } from './injector-config.ts'
import { InjectInvalidError } from '../errors.ts'
import { prefixPatch, type Segment } from './json-patch.ts'
import { injectPod, type InjectOptions, type InjectResult } from './patch.ts'
import { isObject, objectOr, stringMap, type Json } from './shape.ts'

// Pods and the pod templates of workloads. A workload's template is injected exactly like a pod
// (its annotations are the pods'), and the patch is moved under the template's path, so the pods the
// controller later creates already carry the sidecar and the webhook leaves them alone.

/** Where each kind keeps its pod template. */
export const TEMPLATE_PATHS: Record<string, readonly Segment[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template']
}

export interface ObjectResult extends InjectResult {
  /** The whole object (pod or workload), patched. */
  object: Json
  kind: string
  /** "kind/name" for messages. */
  ref: string
}

export const isInjectable = (obj: unknown): boolean => isObject(obj) && typeof obj.kind === 'string' && (obj.kind === 'Pod' || obj.kind in TEMPLATE_PATHS)

function refOf (obj: Json): string {
  const md = objectOr(obj.metadata)
  const name = typeof md.name === 'string' ? md.name : typeof md.generateName === 'string' ? `${md.generateName}*` : '(unnamed)'
  return `${typeof obj.kind === 'string' ? obj.kind.toLowerCase() : 'object'}/${name}`
}

/** Injects a Pod or a workload's pod template; any other object is returned unchanged (reason not-a-workload). */
export function injectObject (obj: unknown, opts: InjectOptions = {}): ObjectResult {
  if (!isObject(obj)) throw new InjectInvalidError('cannot inject: expected a Kubernetes object')
  const kind = typeof obj.kind === 'string' ? obj.kind : ''
  const ref = refOf(obj)
  if (kind === 'Pod') {
    const r = injectPod(obj, opts)
    return { ...r, object: r.pod, kind, ref }
  }
  const path = TEMPLATE_PATHS[kind]
  if (path === undefined) {
    return { pod: {}, object: structuredClone(obj), patch: [], injected: false, reason: 'not-a-workload', detail: `${kind === '' ? 'an object without kind' : kind} has no pod template`, warnings: [], kind, ref }
  }
  let template: unknown = obj
  for (const s of path) template = isObject(template) ? template[s] : undefined
  if (!isObject(template)) throw new InjectInvalidError(`cannot inject ${ref}: no pod template at .${path.join('.')}`)

  const r = injectPod(template, opts)
  const warnings = [...r.warnings]
  // A common slip: the annotation on the workload's own metadata never reaches its pods.
  if (stringMap(objectOr(obj.metadata).annotations)[ANNOTATION.inject] !== undefined && stringMap(objectOr(template.metadata).annotations)[ANNOTATION.inject] === undefined) {
    warnings.push(`gatehouse: ${ref}: ${ANNOTATION.inject} on the ${kind}'s metadata has no effect; set it on .${path.join('.')}.metadata.annotations`)
  }
  const object = structuredClone(obj)
  let parent: Json = object
  for (const s of path.slice(0, -1)) parent = parent[s as string] as Json
  parent[path.at(-1) as string] = r.pod
  return { ...r, warnings, object, patch: prefixPatch(path, r.patch), kind, ref }
}
