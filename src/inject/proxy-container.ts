import { sidecarProcessEnv } from './node-options.ts'
import { DECISION_FILE, FILE, MOUNT, PROXY_CONTAINER, VOLUME, type InjectorConfig, type ProxyResources } from './injector-config.ts'
import type { Json } from './shape.ts'

// The objects the injector adds to a pod: the proxy as a native sidecar, its three volumes, and the
// environment that sends the app's outbound HTTP through it. Pure builders; patch.ts places them.

export interface SidecarSettings {
  upstreamPort: number
  policyConfigMap: string
  routesConfigMap: string
  resources: ProxyResources
}

/** The proxy container. Every arg is a real flag of `gatehouse proxy`. */
export function proxyContainer (cfg: InjectorConfig, s: SidecarSettings): Json {
  const admin = (path: string): Json => ({ path, port: cfg.adminPort, scheme: 'HTTP' })
  return {
    name: PROXY_CONTAINER,
    image: cfg.image,
    imagePullPolicy: cfg.imagePullPolicy,
    // A native sidecar (Kubernetes >= 1.29): an init container that keeps running, started before
    // the app's init containers and containers, and stopped after them, so a Job still completes.
    restartPolicy: 'Always',
    args: [
      'proxy',
      '--inbound', `0.0.0.0:${cfg.inboundPort}`,
      '--outbound', `127.0.0.1:${cfg.outboundPort}`,
      // 0.0.0.0: the kubelet probes the pod IP, for the proxy's own probes and the app's relayed ones.
      // Only those answer there; /metrics stays on loopback unless the injector is told otherwise.
      '--admin', `0.0.0.0:${cfg.adminPort}`,
      ...(cfg.exposeMetrics ? ['--admin-expose-metrics'] : []),
      '--upstream', `127.0.0.1:${s.upstreamPort}`,
      // Connection limits and handshake/idle timeouts sized to the container's memory limit
      // (proxy/connection-budget.ts): a connection flood is refused before it can OOM-kill the pod.
      '--memory-limit', s.resources.memoryLimit,
      '--policy', `${MOUNT.policy}/${FILE.policy}`,
      '--trust-bundle', `${MOUNT.bundle}/${FILE.bundle}`,
      '--routes', `${MOUNT.routes}/${FILE.routes}`,
      '--decision-log', `${MOUNT.decisions}/${FILE.decisions}`,
      '--decision-log-max-bytes', String(DECISION_FILE.maxBytes),
      '--decision-log-max-files', String(DECISION_FILE.maxFiles),
      '--ca-url', cfg.caUrl,
      '--token-file', `${MOUNT.token}/${FILE.token}`,
      '--trust-domain', cfg.trustDomain,
      // The kubelet expands $(VAR) from the env below: the CA must issue exactly this pod's identity.
      '--spiffe-id', `spiffe://${cfg.trustDomain}/ns/$(POD_NAMESPACE)/sa/$(POD_SERVICE_ACCOUNT)`
    ],
    env: [
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      { name: 'POD_SERVICE_ACCOUNT', valueFrom: { fieldRef: { fieldPath: 'spec.serviceAccountName' } } },
      // The app's original HTTP probes, for the admin port's /app-health relay (empty when there are none).
      { name: 'GATEHOUSE_APP_PROBES', valueFrom: { fieldRef: { fieldPath: "metadata.annotations['gatehouse.io/app-probes']" } } },
      // Heap sizes that fit the container's memory limit, and the malloc arena cap (see node-options.ts).
      ...Object.entries(sidecarProcessEnv(s.resources.memoryLimit)).map(([name, value]) => ({ name, value }))
    ],
    ports: [
      { name: 'gh-inbound', containerPort: cfg.inboundPort, protocol: 'TCP' },
      { name: 'gh-admin', containerPort: cfg.adminPort, protocol: 'TCP' }
    ],
    // The app's containers start only once this passes: the proxy has an identity and a policy.
    startupProbe: { httpGet: admin('/readyz'), periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 600 },
    readinessProbe: { httpGet: admin('/readyz'), periodSeconds: 5, timeoutSeconds: 1, failureThreshold: 3 },
    livenessProbe: { httpGet: admin('/healthz'), periodSeconds: 10, timeoutSeconds: 1, failureThreshold: 3 },
    resources: {
      requests: { cpu: s.resources.cpuRequest, memory: s.resources.memoryRequest },
      limits: { cpu: s.resources.cpuLimit, memory: s.resources.memoryLimit }
    },
    securityContext: {
      runAsNonRoot: true,
      runAsUser: cfg.proxyUid,
      runAsGroup: cfg.proxyUid,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' }
    },
    volumeMounts: [
      { name: VOLUME.token, mountPath: MOUNT.token, readOnly: true },
      { name: VOLUME.policy, mountPath: MOUNT.policy, readOnly: true },
      { name: VOLUME.bundle, mountPath: MOUNT.bundle, readOnly: true },
      { name: VOLUME.routes, mountPath: MOUNT.routes, readOnly: true },
      { name: VOLUME.decisions, mountPath: MOUNT.decisions }
    ],
    terminationMessagePolicy: 'FallbackToLogsOnError'
  }
}

export function proxyVolumes (cfg: InjectorConfig, s: SidecarSettings): Json[] {
  return [
    {
      // A token only the CA accepts (its own audience), rotated by the kubelet; never the API token.
      name: VOLUME.token,
      projected: { sources: [{ serviceAccountToken: { audience: cfg.tokenAudience, expirationSeconds: cfg.tokenExpirationSeconds, path: FILE.token } }] }
    },
    // items make the expected key explicit: a ConfigMap without it fails visibly at mount time.
    { name: VOLUME.policy, configMap: { name: s.policyConfigMap, items: [{ key: FILE.policy, path: FILE.policy }] } },
    { name: VOLUME.bundle, configMap: { name: cfg.bundleConfigMap, items: [{ key: FILE.bundle, path: FILE.bundle }] } },
    // Optional: a pod that calls no other mesh service needs no routes; the proxy refuses all until it appears.
    { name: VOLUME.routes, configMap: { name: s.routesConfigMap, optional: true, items: [{ key: FILE.routes, path: FILE.routes }] } },
    // The decision-log file: sized above what rotation keeps, since a pod whose emptyDir exceeds its sizeLimit is evicted.
    { name: VOLUME.decisions, emptyDir: { sizeLimit: DECISION_FILE.volumeSize } }
  ]
}

/** Hosts the app must reach directly, never through the outbound proxy. */
export function noProxyHosts (cfg: InjectorConfig): string[] {
  const hosts = ['localhost', '127.0.0.1', '::1']
  try {
    const host = new URL(cfg.caUrl).hostname.replace(/^\[|\]$/g, '')
    if (host !== '' && !hosts.includes(host)) hosts.push(host)
  } catch { /* the CLI checks the URL; a bad one only loses the CA entry here */ }
  return hosts
}

/**
 * Env for app containers, as upper/lower-case pairs (curl and many libraries read only the lower-case
 * name, others only the upper-case one): a pair is added or skipped as a whole.
 */
export function appProxyEnv (cfg: InjectorConfig): Array<Array<{ name: string, value: string }>> {
  const proxy = `http://127.0.0.1:${cfg.outboundPort}`
  const noProxy = noProxyHosts(cfg).join(',')
  return [
    [{ name: 'HTTP_PROXY', value: proxy }, { name: 'http_proxy', value: proxy }],
    [{ name: 'NO_PROXY', value: noProxy }, { name: 'no_proxy', value: noProxy }]
  ]
}
