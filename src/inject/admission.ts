import { asGatehouseError } from '../errors.ts'
import type { JsonPatchOp } from './json-patch.ts'
import { injectPod, type InjectOptions } from './patch.ts'
import { arrayOr, isObject, objectOr, stringMap } from './shape.ts'
import { ANNOTATION, DEFAULT_INJECTOR_CONFIG, type InjectorConfig } from './injector-config.ts'
import { appProxyEnv } from './proxy-container.ts'

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

// An app reachable around its sidecar. Kubernetes cannot tell what address a process binds, so this
// is a heuristic over what the pod spec shows, for injected pods without gatehouse.io/capture:
// iptables (with capture every inbound connection lands on the sidecar anyway). Per app container,
// at most one warning, the first of:
//   1. its command, args or env values name an all-interfaces address: 0.0.0.0, [::] or :: as a
//      host, or a bare :PORT (Go's spelling of "every interface"), e.g. --listen=0.0.0.0:8080;
//   2. it has a tcpSocket or grpc probe: the kubelet connects to the pod IP, so the app listens there
//      (HTTP probes are relayed by the sidecar's admin port and need no such thing);
//   3. it declares a containerPort and nothing in its command, args or env says 127.0.0.1, localhost
//      or ::1: Kubernetes cannot tell, so the owner is reminded that it must listen on loopback.
// The variables the injector itself adds (HTTP_PROXY, NO_PROXY, ...) are not read.

const ALL_INTERFACES = /(?:^|[\s="',/])(?:0\.0\.0\.0|\[::\]|::)(?::\d{1,5})?(?=$|[\s"',]|\/(?!\d))|(?:^|[\s="',]):\d{1,5}(?=$|[\s"',/])/
const LOOPBACK = /127\.0\.0\.1|localhost|\[?::1\]?(?![\da-f:])/i
export const BYPASS_ADVICE = 'make it listen on 127.0.0.1 only, or annotate the pod gatehouse.io/capture: iptables (deploy/README.md, "Inbound capture")'

/** Warnings that an injected pod's app may be reachable at the pod IP without going through its sidecar. */
export function bypassWarnings (pod: unknown, cfg: InjectorConfig = DEFAULT_INJECTOR_CONFIG): string[] {
  if (!isObject(pod)) return []
  if (stringMap(objectOr(pod.metadata).annotations)[ANNOTATION.capture] === 'iptables') return []
  const ours = new Set(appProxyEnv(cfg).flat().map(e => e.name))
  const warnings: string[] = []
  for (const item of arrayOr(objectOr(pod.spec).containers)) {
    const c = objectOr(item)
    const name = String(c.name)
    const texts: Array<[string, string]> = [
      ...[...arrayOr(c.command), ...arrayOr(c.args)].filter((a): a is string => typeof a === 'string').map(a => ['args', a] as [string, string]),
      ...arrayOr(c.env).map(objectOr).filter(e => typeof e.value === 'string' && !ours.has(String(e.name))).map(e => [`env ${String(e.name)}`, String(e.value)] as [string, string])
    ]
    const all = texts.find(([, text]) => ALL_INTERFACES.test(text))
    if (all !== undefined) {
      const shown = all[1].length > 80 ? `${all[1].slice(0, 77)}...` : all[1]
      warnings.push(`gatehouse: container ${name} is told to listen on every interface (${all[0]}: ${JSON.stringify(shown)}): the pod IP reaches it around the sidecar; ${BYPASS_ADVICE}`)
      continue
    }
    const probe = ['startupProbe', 'readinessProbe', 'livenessProbe'].find(p => isObject(c[p]) && (isObject(objectOr(c[p]).tcpSocket) || isObject(objectOr(c[p]).grpc)))
    if (probe !== undefined) {
      warnings.push(`gatehouse: container ${name} has a ${isObject(objectOr(c[probe]).tcpSocket) ? 'tcpSocket' : 'grpc'} ${probe}, which the kubelet sends to the pod IP, so the app listens beyond loopback: the pod IP reaches it around the sidecar; ${BYPASS_ADVICE}`)
      continue
    }
    const ports = arrayOr(c.ports).map(p => objectOr(p).containerPort).filter(p => typeof p === 'number')
    if (ports.length > 0 && !texts.some(([, text]) => LOOPBACK.test(text))) {
      warnings.push(`gatehouse: container ${name} declares port ${ports.join(', ')}; Kubernetes cannot tell which address it listens on, and unless that is 127.0.0.1 the pod IP reaches it around the sidecar: ${BYPASS_ADVICE}`)
    }
  }
  return warnings
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
    const warnings = [...r.warnings, ...(r.injected ? bypassWarnings(r.pod, opts.config) : [])]
    return answer(uid, { ...who, injected: r.injected, reason: r.reason, detail: r.detail, warnings }, r.patch)
  } catch (err) {
    // A bug of ours must not block the pod either; its message goes to the log, not to the user.
    const e = asGatehouseError(err)
    const detail = e.code === 'GH_INTERNAL' ? `GH_INTERNAL: ${err instanceof Error ? err.message : String(err)}` : `${e.code}: ${e.message}`
    return answer(uid, { ...who, injected: false, reason: 'invalid-pod', detail, warnings: [`gatehouse: not injected: ${e.message}`] })
  }
}
