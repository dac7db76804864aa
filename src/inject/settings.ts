import { ANNOTATION, type InjectorConfig, type ProxyResources } from './injector-config.ts'
import { parseQuantity } from '../quantity.ts'
import { arrayOr, objectOr, type Json } from './shape.ts'
import type { SidecarSettings } from './proxy-container.ts'

// Per-pod settings from the pod's annotations, with the injector's defaults. Every problem is
// collected: a pod with a bad annotation is left uninjected with all of them named at once.

const DEFAULT_UPSTREAM_PORT = 8080
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

export function serviceAccountOf (spec: Json): string {
  // serviceAccount is the deprecated spelling; the API server fills serviceAccountName from it.
  for (const v of [spec.serviceAccountName, spec.serviceAccount]) if (typeof v === 'string' && v !== '') return v
  return 'default'
}

/** The first containerPort declared by the app's containers, in order. */
function firstContainerPort (spec: Json): number | undefined {
  for (const c of arrayOr(spec.containers)) {
    for (const p of arrayOr(objectOr(c).ports)) {
      const port = objectOr(p).containerPort
      if (typeof port === 'number' && Number.isInteger(port) && port > 0 && port < 65536) return port
    }
  }
  return undefined
}

export function readSettings (annotations: Record<string, string>, spec: Json, cfg: InjectorConfig): { settings?: SidecarSettings, problems: string[] } {
  const problems: string[] = []
  const proxyPorts = [cfg.inboundPort, cfg.outboundPort, cfg.adminPort]

  let upstreamPort = firstContainerPort(spec) ?? DEFAULT_UPSTREAM_PORT
  const portText = annotations[ANNOTATION.upstreamPort]
  if (portText !== undefined) {
    const n = Number(portText)
    if (!/^\d{1,5}$/.test(portText) || n < 1 || n > 65535) problems.push(`${ANNOTATION.upstreamPort} must be a port number, got ${JSON.stringify(portText.slice(0, 40))}`)
    else upstreamPort = n
  }
  if (proxyPorts.includes(upstreamPort)) problems.push(`the app port ${upstreamPort} is one of the proxy's own ports (${proxyPorts.join(', ')}); set ${ANNOTATION.upstreamPort}`)

  const policyConfigMap = annotations[ANNOTATION.policy] ?? `${serviceAccountOf(spec)}-gatehouse-policy`
  if (policyConfigMap.length > 253 || !DNS_SUBDOMAIN.test(policyConfigMap)) problems.push(`policy ConfigMap name ${JSON.stringify(policyConfigMap.slice(0, 60))} is not a valid ConfigMap name (set ${ANNOTATION.policy})`)

  const resources: ProxyResources = { ...cfg.resources }
  const keys = [['cpuRequest', ANNOTATION.cpuRequest], ['memoryRequest', ANNOTATION.memoryRequest], ['cpuLimit', ANNOTATION.cpuLimit], ['memoryLimit', ANNOTATION.memoryLimit]] as const
  for (const [field, annotation] of keys) {
    const v = annotations[annotation]
    if (v === undefined) continue
    if (parseQuantity(v) === undefined) problems.push(`${annotation} must be a Kubernetes quantity such as 100m, 1 or 128Mi, got ${JSON.stringify(v.slice(0, 40))}`)
    else resources[field] = v
  }
  // A request above its limit would make the API server reject the whole pod.
  for (const [what, req, lim] of [['cpu', resources.cpuRequest, resources.cpuLimit], ['memory', resources.memoryRequest, resources.memoryLimit]] as const) {
    const r = parseQuantity(req)
    const l = parseQuantity(lim)
    if (r !== undefined && l !== undefined && r > l) problems.push(`proxy ${what} request ${req} is above its limit ${lim}`)
  }
  // Outbound destinations: an optional ConfigMap (without it every outbound call is refused).
  const routesConfigMap = `${serviceAccountOf(spec)}-gatehouse-routes`
  return problems.length > 0 ? { problems } : { settings: { upstreamPort, policyConfigMap, routesConfigMap, resources }, problems }
}

/** Reasons the pod cannot take the sidecar at all, whatever its annotations say. */
export function refusals (spec: Json, cfg: InjectorConfig, volumeNames: readonly string[]): Array<{ reason: string, detail: string }> {
  const out: Array<{ reason: string, detail: string }> = []
  if (spec.hostNetwork === true) {
    out.push({ reason: 'host-network', detail: `hostNetwork pod: a sidecar would share the node's network namespace, clash on ports ${cfg.inboundPort}/${cfg.outboundPort}/${cfg.adminPort} and proxy the node's traffic` })
  }
  if (objectOr(spec.os).name === 'windows') out.push({ reason: 'unsupported-os', detail: 'Windows pod: the proxy image is Linux-only' })
  const proxyPorts = new Set([cfg.inboundPort, cfg.outboundPort, cfg.adminPort])
  for (const field of ['containers', 'initContainers']) {
    for (const c of arrayOr(spec[field])) {
      for (const p of arrayOr(objectOr(c).ports)) {
        const port = objectOr(p).containerPort
        if (typeof port === 'number' && proxyPorts.has(port)) out.push({ reason: 'port-conflict', detail: `container ${String(objectOr(c).name)} uses port ${port}, which the proxy needs` })
      }
    }
  }
  const taken = arrayOr(spec.volumes).map(v => objectOr(v).name).filter(n => typeof n === 'string' && volumeNames.includes(n))
  if (taken.length > 0) out.push({ reason: 'name-conflict', detail: `the pod already has volume(s) ${taken.join(', ')}, which the injector adds` })
  return out
}
