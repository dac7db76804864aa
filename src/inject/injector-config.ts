import { DEFAULT_SIDECAR_MEMORY_LIMIT } from './node-options.ts'
import { PORTS } from '../ports.ts'
// What the injector adds is decided by this configuration (flags of `gatehouse inject` and
// `gatehouse inject serve`) and by per-pod annotations. Names the rest of the system depends on
// (annotation keys, volume and container names, mount paths) are defined here, once.

export const ANNOTATION = {
  /** Pod opt-in/opt-out: "enabled" or "disabled" (disabled wins over the namespace label). */
  inject: 'gatehouse.io/inject',
  /** Set on an injected pod: JSON describing what was added; its presence makes injection a no-op. */
  status: 'gatehouse.io/status',
  /** Set on an opted-in pod that was not injected, with the reason (e.g. hostNetwork). */
  skipReason: 'gatehouse.io/skip-reason',
  /** Name of the policy ConfigMap (default "<service account>-gatehouse-policy"). */
  policy: 'gatehouse.io/policy',
  /** Port the app listens on, for the proxy's --upstream. */
  upstreamPort: 'gatehouse.io/upstream-port',
  /** JSON written by the injector: admin path -> the app's original HTTP probe, for the admin relay. */
  appProbes: 'gatehouse.io/app-probes',
  /** "iptables": an init container redirects the pod's inbound TCP to the proxy (needs NET_ADMIN). */
  capture: 'gatehouse.io/capture',
  /** Inbound ports capture leaves alone, comma-separated. */
  captureExcludePorts: 'gatehouse.io/capture-exclude-ports',
  cpuRequest: 'gatehouse.io/proxy-cpu-request',
  memoryRequest: 'gatehouse.io/proxy-memory-request',
  cpuLimit: 'gatehouse.io/proxy-cpu-limit',
  memoryLimit: 'gatehouse.io/proxy-memory-limit'
} as const

/** Namespace label that opts every pod of the namespace in. */
export const NAMESPACE_LABEL = 'gatehouse.io/inject'

export const PROXY_CONTAINER = 'gatehouse-proxy'

export const VOLUME = {
  token: 'gatehouse-token',
  policy: 'gatehouse-policy',
  bundle: 'gatehouse-bundle',
  routes: 'gatehouse-routes',
  decisions: 'gatehouse-decisions'
} as const

export const MOUNT = {
  token: '/var/run/secrets/gatehouse',
  policy: '/etc/gatehouse/policy',
  bundle: '/etc/gatehouse/bundle',
  routes: '/etc/gatehouse/routes',
  decisions: '/var/log/gatehouse'
} as const

export const FILE = {
  token: 'token',
  policy: 'policy.yaml',
  bundle: 'bundle.pem',
  routes: 'routes.yaml',
  decisions: 'decisions.log'
} as const

/**
 * The decision-log file in the pod: rotated at 32 MiB, 4 rotated files kept, on an emptyDir of
 * 192 MiB (5 x 32 MiB + room): the local guarantee that fails closed; stdout carries the copy that
 * the cluster's log agent ships (docs: deploy/README.md, "The decision log in a pod").
 */
export const DECISION_FILE = { maxBytes: 32 * 1024 * 1024, maxFiles: 4, volumeSize: '192Mi' } as const

export interface ProxyResources {
  cpuRequest: string
  memoryRequest: string
  cpuLimit: string
  memoryLimit: string
}

export interface InjectorConfig {
  image: string
  /** Image of the capture init container (the gatehouse image plus iptables). */
  captureImage: string
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never'
  caUrl: string
  trustDomain: string
  /** ConfigMap, in each injected namespace, holding the trust bundle under key bundle.pem. */
  bundleConfigMap: string
  inboundPort: number
  outboundPort: number
  adminPort: number
  /** Give each proxy --admin-expose-metrics: /metrics on the pod IP, for a Prometheus scraping pods. */
  exposeMetrics: boolean
  /** Audience of the projected service-account token: what the CA requires. */
  tokenAudience: string
  tokenExpirationSeconds: number
  /** The image's numeric user (Dockerfile: USER 1337:1337). */
  proxyUid: number
  resources: ProxyResources
}

export const DEFAULT_INJECTOR_CONFIG: InjectorConfig = {
  image: 'gatehouse:0.1.0',
  captureImage: 'gatehouse-capture:0.1.0',
  imagePullPolicy: 'IfNotPresent',
  caUrl: `https://gatehouse-ca.gatehouse-system.svc:${PORTS.ca}`,
  trustDomain: 'cluster.local',
  bundleConfigMap: 'gatehouse-trust-bundle',
  inboundPort: PORTS.inbound,
  outboundPort: PORTS.outbound,
  adminPort: PORTS.admin,
  // Off: the admin port is on the pod IP for the kubelet's probes, and only those answer there.
  exposeMetrics: false,
  tokenAudience: 'gatehouse-ca',
  tokenExpirationSeconds: 3600,
  proxyUid: 1337,
  // Node is single-threaded for the request path: one CPU is the useful ceiling.
  resources: { cpuRequest: '50m', memoryRequest: '64Mi', cpuLimit: '1', memoryLimit: DEFAULT_SIDECAR_MEMORY_LIMIT }
}

export function injectorConfig (overrides: Partial<Omit<InjectorConfig, 'resources'>> & { resources?: Partial<ProxyResources> } = {}): InjectorConfig {
  return {
    ...DEFAULT_INJECTOR_CONFIG,
    ...overrides,
    resources: { ...DEFAULT_INJECTOR_CONFIG.resources, ...overrides.resources }
  }
}
