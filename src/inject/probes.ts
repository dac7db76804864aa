import type { PatchRecorder, Segment } from './json-patch.ts'
import { arrayOr, isObject, type Json } from './shape.ts'

// With the sidecar in front of the app, the kubelet's plaintext HTTP probes are pointed at the
// proxy's admin port instead: /app-health/<container>/<livez|readyz|startupz>. The admin server
// relays exactly those paths to the app's original probe, which is recorded (path -> original) in
// the gatehouse.io/app-probes annotation; nothing else reaches the app through the admin port.

export const PROBE_KINDS = [
  ['livenessProbe', 'livez'],
  ['readinessProbe', 'readyz'],
  ['startupProbe', 'startupz']
] as const

/** What the relay needs to repeat the app's own probe, against 127.0.0.1 of the pod. */
export interface OriginalProbe {
  httpGet: {
    path: string
    port: number
    scheme: 'HTTP'
    host?: string
    httpHeaders?: Array<{ name: string, value: string }>
  }
  timeoutSeconds: number
}

export function appHealthPath (container: string, probe: string): string {
  return `/app-health/${container}/${probe}`
}

const LOCAL_HOSTS = new Set(['', 'localhost', '127.0.0.1', '::1'])

function resolvePort (port: unknown, container: Json): number | undefined {
  if (typeof port === 'number') return Number.isInteger(port) && port > 0 && port < 65536 ? port : undefined
  if (typeof port !== 'string') return undefined
  if (/^\d+$/.test(port)) return resolvePort(Number(port), container)
  // A named port refers to one of this container's ports.
  const named = arrayOr(container.ports).find(p => isObject(p) && p.name === port)
  return isObject(named) ? resolvePort(named.containerPort, container) : undefined
}

function headers (v: unknown): Array<{ name: string, value: string }> | undefined {
  const list = arrayOr(v).filter((h): h is { name: string, value: string } => isObject(h) && typeof h.name === 'string' && typeof h.value === 'string')
  return list.length > 0 ? list.map(h => ({ name: h.name, value: h.value })) : undefined
}

/**
 * Rewrites the HTTP probes of the containers at `containersPath` to the admin port. Returns the
 * originals keyed by their new path, and warnings for probes left as they were.
 */
export function rewriteProbes (rec: PatchRecorder, containersPath: readonly Segment[], adminPort: number): { originals: Record<string, OriginalProbe>, warnings: string[] } {
  const originals: Record<string, OriginalProbe> = {}
  const warnings: string[] = []
  const containers = arrayOr(rec.get(containersPath))
  containers.forEach((c, i) => {
    if (!isObject(c) || typeof c.name !== 'string') return
    for (const [kind, short] of PROBE_KINDS) {
      const probe = c[kind]
      if (!isObject(probe) || !isObject(probe.httpGet)) continue // exec, tcpSocket and grpc probes stay as they are
      const get = probe.httpGet
      const where = `container ${c.name} ${kind}`
      const host = typeof get.host === 'string' ? get.host : ''
      if (!LOCAL_HOSTS.has(host)) continue // probes another host, not this pod's app: nothing to relay
      const scheme = typeof get.scheme === 'string' ? get.scheme.toUpperCase() : 'HTTP'
      if (scheme !== 'HTTP') { warnings.push(`gatehouse: ${where} uses ${scheme}; left unchanged (the admin relay speaks plain HTTP)`); continue }
      const port = resolvePort(get.port, c)
      if (port === undefined) { warnings.push(`gatehouse: ${where} port ${JSON.stringify(get.port)} does not resolve to a port number; left unchanged`); continue }
      if (port === adminPort) continue // already aimed at the admin port
      const path = appHealthPath(c.name, short)
      const hdrs = headers(get.httpHeaders)
      originals[path] = {
        httpGet: {
          path: typeof get.path === 'string' && get.path !== '' ? get.path : '/',
          port,
          scheme: 'HTTP',
          ...(host === '' ? {} : { host }),
          ...(hdrs === undefined ? {} : { httpHeaders: hdrs })
        },
        timeoutSeconds: typeof probe.timeoutSeconds === 'number' ? probe.timeoutSeconds : 1
      }
      // Only httpGet changes: thresholds, periods and delays are the app owner's and stay.
      rec.replace([...containersPath, i, kind, 'httpGet'], { path, port: adminPort, scheme: 'HTTP' })
    }
  })
  return { originals, warnings }
}
