import { InjectInvalidError } from '../errors.ts'

// Small guards for untrusted JSON/YAML: AdmissionReviews and manifests are read as unknown and
// checked here, so the injector's logic can rely on the few shapes it touches.

export type Json = Record<string, unknown>

export const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)

export const objectOr = (v: unknown): Json => isObject(v) ? v : {}

export const arrayOr = (v: unknown): unknown[] => Array.isArray(v) ? v : []

/** String-valued map (annotations, labels); other values are ignored. */
export function stringMap (v: unknown): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, val] of Object.entries(objectOr(v))) if (typeof val === 'string') out[k] = val
  return out
}

/** Checks the parts of a pod (or pod template) the injector edits; throws GH_INJECT_INVALID otherwise. */
export function checkPodShape (pod: Json): void {
  const problems: string[] = []
  if (pod.metadata !== undefined && pod.metadata !== null && !isObject(pod.metadata)) problems.push('metadata must be an object')
  const md = objectOr(pod.metadata)
  if (md.annotations !== undefined && md.annotations !== null && !isObject(md.annotations)) problems.push('metadata.annotations must be an object')
  if (!isObject(pod.spec)) {
    problems.push('spec must be an object')
  } else {
    const spec = pod.spec
    if (!Array.isArray(spec.containers) || spec.containers.length === 0) problems.push('spec.containers must be a non-empty list')
    for (const field of ['containers', 'initContainers'] as const) {
      const list = spec[field]
      if (list === undefined || list === null) continue
      if (!Array.isArray(list)) { problems.push(`spec.${field} must be a list`); continue }
      list.forEach((c, i) => {
        if (!isObject(c) || typeof c.name !== 'string' || c.name === '') problems.push(`spec.${field}[${i}] must be an object with a name`)
        else if (c.env !== undefined && c.env !== null && !Array.isArray(c.env)) problems.push(`spec.${field}[${i}].env must be a list`)
      })
    }
    if (spec.volumes !== undefined && spec.volumes !== null && !Array.isArray(spec.volumes)) problems.push('spec.volumes must be a list')
  }
  if (problems.length > 0) throw new InjectInvalidError(`cannot inject this pod: ${problems.join('; ')}`)
}
