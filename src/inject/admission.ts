import { asGatehouseError } from '../errors.ts'
import type { JsonPatchOp } from './json-patch.ts'
import { injectPod, type InjectOptions } from './patch.ts'
import { isObject, objectOr } from './shape.ts'

// AdmissionReview v1 in, AdmissionReview v1 out. The answer is always allowed: this webhook adds a
// sidecar, it never vetoes a pod. Anything it cannot understand (a malformed review, a pod it cannot
// patch) is let through unchanged with a warning, which kubectl shows to whoever created the pod.

export interface AdmissionResponse {
  uid: string
  allowed: true
  patchType?: 'JSONPatch'
  patch?: string
  warnings?: string[]
}

export interface AdmissionReviewOut {
  apiVersion: string
  kind: 'AdmissionReview'
  response: AdmissionResponse
}

/** One line of the operational log per review. */
export interface AdmissionDecision {
  uid: string
  namespace?: string
  pod?: string
  operation?: string
  injected: boolean
  reason: string
  detail: string
  warnings: string[]
  ops: number
}

export interface AdmissionOutcome {
  review: AdmissionReviewOut
  decision: AdmissionDecision
  /** The patch as ops (also base64 in the review), for callers and tests. */
  patch: JsonPatchOp[]
}

const API_VERSION = 'admission.k8s.io/v1'

function answer (uid: string, decision: Omit<AdmissionDecision, 'uid' | 'ops'>, patch: JsonPatchOp[] = []): AdmissionOutcome {
  const response: AdmissionResponse = { uid, allowed: true }
  if (patch.length > 0) {
    response.patchType = 'JSONPatch'
    response.patch = Buffer.from(JSON.stringify(patch)).toString('base64')
  }
  if (decision.warnings.length > 0) response.warnings = decision.warnings
  return { review: { apiVersion: API_VERSION, kind: 'AdmissionReview', response }, decision: { uid, ...decision, ops: patch.length }, patch }
}

const malformed = (uid: string, what: string): AdmissionOutcome =>
  answer(uid, { injected: false, reason: 'malformed-review', detail: what, warnings: [`gatehouse: not injected: ${what}`] })

/** `body` is the parsed request body (or the text that failed to parse). */
export function admit (body: unknown, opts: InjectOptions = {}): AdmissionOutcome {
  if (!isObject(body)) return malformed('', 'request body is not an AdmissionReview object')
  const request = body.request
  const uid = isObject(request) && typeof request.uid === 'string' ? request.uid : ''
  if (body.apiVersion !== API_VERSION || body.kind !== 'AdmissionReview') return malformed(uid, `expected apiVersion ${API_VERSION}, kind AdmissionReview`)
  if (!isObject(request) || uid === '') return malformed(uid, 'AdmissionReview has no request.uid')

  const operation = typeof request.operation === 'string' ? request.operation : undefined
  const namespace = typeof request.namespace === 'string' ? request.namespace : undefined
  const base = { operation, ...(namespace === undefined ? {} : { namespace }) }
  const kind = objectOr(request.kind)
  const resource = objectOr(request.resource)
  const subResource = typeof request.subResource === 'string' ? request.subResource : ''
  // Only pod creation: later operations cannot change containers, and sub-resources are not pods.
  if (kind.kind !== 'Pod' || (resource.resource !== undefined && resource.resource !== 'pods') || subResource !== '') {
    return answer(uid, { ...base, injected: false, reason: 'not-a-pod', detail: `${String(kind.kind)}${subResource === '' ? '' : `/${subResource}`} is not a pod`, warnings: [] })
  }
  if (operation !== 'CREATE') return answer(uid, { ...base, injected: false, reason: 'not-create', detail: `operation ${String(operation)}`, warnings: [] })
  const pod = request.object
  if (!isObject(pod)) return malformed(uid, 'AdmissionReview has no request.object')
  const md = objectOr(pod.metadata)
  const name = typeof md.name === 'string' ? md.name : typeof request.name === 'string' ? request.name : typeof md.generateName === 'string' ? `${md.generateName}*` : undefined
  const who = { ...base, ...(name === undefined ? {} : { pod: name }) }
  try {
    const r = injectPod(pod, opts)
    return answer(uid, { ...who, injected: r.injected, reason: r.reason, detail: r.detail, warnings: r.warnings }, r.patch)
  } catch (err) {
    // A bug of ours must not block the pod either; its message goes to the log, not to the user.
    const e = asGatehouseError(err)
    const detail = e.code === 'GH_INTERNAL' ? `GH_INTERNAL: ${err instanceof Error ? err.message : String(err)}` : `${e.code}: ${e.message}`
    return answer(uid, { ...who, injected: false, reason: 'invalid-pod', detail, warnings: [`gatehouse: not injected: ${e.message}`] })
  }
}
