import { captureInitContainer } from '../capture/iptables.ts'
import { ANNOTATION, DEFAULT_INJECTOR_CONFIG, PROXY_CONTAINER, VOLUME, type InjectorConfig } from './injector-config.ts'
import { InjectInvalidError } from '../errors.ts'
import { PatchRecorder, type JsonPatchOp } from './json-patch.ts'
import { decideOptIn } from './optin.ts'
import { rewriteProbes } from './probes.ts'
import { readSettings, refusals } from './settings.ts'
import { appProxyEnv, proxyContainer, proxyVolumes } from './proxy-container.ts'
import { arrayOr, checkPodShape, isObject, objectOr, stringMap, type Json } from './shape.ts'

// The injector proper: pod (or pod template) + namespace labels + config -> patched pod and the
// RFC 6902 patch between them. Pure: no I/O, no clock, the input is never modified. The same pod
// always gives the same patch, and a patched pod gives an empty one.

export interface InjectOptions {
  namespaceLabels?: Record<string, string>
  config?: InjectorConfig
}

export interface InjectResult {
  pod: Json
  patch: JsonPatchOp[]
  injected: boolean
  /**
   * Stable category: injected; or, with no sidecar added: not-opted-in, disabled-by-annotation,
   * invalid-annotation, already-injected, host-network, unsupported-os, port-conflict, name-conflict.
   */
  reason: string
  /** One line for people and logs. */
  detail: string
  warnings: string[]
}

/** What gatehouse.io/status records: enough to see, and undo, what was added. */
export interface InjectionStatus {
  version: 1
  container: string
  image: string
  volumes: string[]
  upstreamPort: number
  policyConfigMap: string
}

const unchanged = (pod: Json, reason: string, detail: string, warnings: string[] = []): InjectResult =>
  ({ pod: structuredClone(pod), patch: [], injected: false, reason, detail, warnings })

const hasContainer = (spec: Json, name: string): boolean =>
  [...arrayOr(spec.containers), ...arrayOr(spec.initContainers)].some(c => objectOr(c).name === name)

export function injectPod (pod: unknown, opts: InjectOptions = {}): InjectResult {
  if (!isObject(pod)) throw new InjectInvalidError('cannot inject: a pod must be an object')
  const cfg = opts.config ?? DEFAULT_INJECTOR_CONFIG
  const annotations = stringMap(objectOr(pod.metadata).annotations)

  const optIn = decideOptIn(annotations, opts.namespaceLabels ?? {})
  if (!optIn.optedIn) return unchanged(pod, optIn.reason, optIn.detail, optIn.warnings)
  if (annotations[ANNOTATION.status] !== undefined) return unchanged(pod, 'already-injected', `pod has the ${ANNOTATION.status} annotation`)
  checkPodShape(pod)
  const spec = pod.spec as Json
  if (hasContainer(spec, PROXY_CONTAINER)) return unchanged(pod, 'already-injected', `pod already has a ${PROXY_CONTAINER} container`)

  const rec = new PatchRecorder(structuredClone(pod))
  const refused = refusals(spec, cfg, Object.values(VOLUME))
  const { settings, problems } = readSettings(annotations, spec, cfg)
  const first = refused[0]
  if (first !== undefined || settings === undefined) {
    const reason = first?.reason ?? 'invalid-annotation'
    const detail = first !== undefined ? refused.map(r => r.detail).join('; ') : problems.join('; ')
    // The pod runs as it was, but says why: the owner asked for a sidecar and did not get one.
    if (annotations[ANNOTATION.skipReason] !== detail) rec.setKey(['metadata', 'annotations'], ANNOTATION.skipReason, detail)
    return { pod: rec.doc, patch: rec.ops, injected: false, reason, detail, warnings: [...optIn.warnings, `gatehouse: not injected: ${detail}`] }
  }

  const warnings = [...optIn.warnings]
  // First in initContainers, so it is up (startupProbe passed) before any of the app's init containers run.
  rec.insert(['spec', 'initContainers'], 0, proxyContainer(cfg, settings))
  // Capture, when asked for, runs before everything (the proxy included): by the time anything
  // listens, inbound TCP to any port of the pod lands on the proxy.
  const capture = annotations[ANNOTATION.capture]
  if (capture === 'iptables') {
    const listed = String(annotations[ANNOTATION.captureExcludePorts] ?? '').split(',').map(x => x.trim()).filter(x => x !== '')
    const exclude = listed.map(Number).filter(n => Number.isInteger(n) && n > 0 && n < 65536)
    if (exclude.length !== listed.length) warnings.push(`${ANNOTATION.captureExcludePorts}: only port numbers are used; ignored ${listed.filter(x => !/^\d+$/.test(x) || Number(x) < 1 || Number(x) > 65535).join(', ')}`)
    rec.insert(['spec', 'initContainers'], 0, captureInitContainer({ image: cfg.captureImage, inboundPort: cfg.inboundPort, excludePorts: [cfg.adminPort, ...exclude] }) as Json)
  } else if (capture !== undefined) warnings.push(`${ANNOTATION.capture}: ${JSON.stringify(capture)} is not a capture mode (only "iptables"); inbound is not captured`)
  for (const v of proxyVolumes(cfg, settings)) rec.append(['spec', 'volumes'], v)

  const envPairs = appProxyEnv(cfg)
  arrayOr(spec.containers).forEach((c, i) => {
    const container = objectOr(c)
    const present = new Set(arrayOr(container.env).map(e => objectOr(e).name))
    const add = envPairs.flatMap((pair) => {
      const set = pair.filter(e => present.has(e.name)).map(e => e.name)
      if (set.length === 0) return pair
      // The app's own setting wins; a silent override could send traffic somewhere it did not expect.
      warnings.push(`gatehouse: container ${String(container.name)} already sets ${set.join(', ')}; kept, and ${pair.map(e => e.name).join('/')} not added`)
      return []
    })
    rec.appendAll(['spec', 'containers', i, 'env'], add)
  })

  const probes = rewriteProbes(rec, ['spec', 'containers'], cfg.adminPort)
  warnings.push(...probes.warnings)
  if (Object.keys(probes.originals).length > 0) rec.setKey(['metadata', 'annotations'], ANNOTATION.appProbes, JSON.stringify(probes.originals))
  rec.removeKey(['metadata', 'annotations'], ANNOTATION.skipReason) // stale, from a copied manifest

  const status: InjectionStatus = {
    version: 1,
    container: PROXY_CONTAINER,
    image: cfg.image,
    volumes: Object.values(VOLUME),
    upstreamPort: settings.upstreamPort,
    policyConfigMap: settings.policyConfigMap
  }
  rec.setKey(['metadata', 'annotations'], ANNOTATION.status, JSON.stringify(status))
  return { pod: rec.doc, patch: rec.ops, injected: true, reason: 'injected', detail: `${optIn.detail}; upstream port ${settings.upstreamPort}, policy ConfigMap ${settings.policyConfigMap}`, warnings }
}
