import { createServer, request, type Server } from 'node:http'
import { BlockList, type AddressInfo, type Socket } from 'node:net'
import type { Registry } from 'prom-client'
import { LoopbackOnlyError, MethodNotAllowedError, MetricsUnavailableError, NotFoundError } from '../errors.ts'
import { sendError } from '../error-body.ts'

// The admin listener (loopback by default): liveness, readiness and Prometheus metrics. Readiness is
// the honest one: ready only with a valid identity and a loaded policy, so Kubernetes keeps traffic
// away from a sidecar that could only deny or fail.
//
// In a pod it listens on 0.0.0.0, because the kubelet probes the pod IP. One listener, split by the
// connection's addresses: the probe paths answer on every address, everything else (/metrics) only
// to a connection that is loopback on both ends, unless exposeMetrics. One port keeps the injector's
// probes and capture exclusions as they are; a second, loopback-only port would add both.

export interface AdminOptions {
  listen: { host: string, port: number }
  registry: Registry
  /** Returns the reasons the proxy is not ready; empty when ready. */
  notReady: () => string[]
  /** /app-health/<container>/<probe> -> the app's original probe (from the injector's annotation). */
  appProbes?: Record<string, AppProbe>
  /** Also serve /metrics off loopback (a Prometheus scraping the pod IP); default false. */
  exposeMetrics?: boolean
}

export interface AppProbe {
  httpGet: { path: string, port: number, scheme?: string, httpHeaders?: Array<{ name: string, value: string }> }
  timeoutSeconds?: number
}

/** Parses the gatehouse.io/app-probes JSON; an empty or missing value means no probes to relay. */
export function parseAppProbes (text: string | undefined): Record<string, AppProbe> {
  if (text === undefined || text.trim() === '') return {}
  const parsed = JSON.parse(text) as Record<string, AppProbe>
  for (const [path, probe] of Object.entries(parsed)) {
    if (!path.startsWith('/app-health/') || typeof probe?.httpGet?.path !== 'string' || !Number.isInteger(probe.httpGet.port)) {
      throw new Error(`app probe ${JSON.stringify(path)} is not {httpGet: {path, port}}`)
    }
  }
  return parsed
}

/** Relays one kubelet probe to the app on 127.0.0.1, in plaintext, and answers with the app's status. */
function relayProbe (probe: AppProbe, res: import('node:http').ServerResponse): void {
  const headers: Record<string, string> = {}
  for (const h of probe.httpGet.httpHeaders ?? []) headers[h.name] = h.value
  const up = request({ host: '127.0.0.1', port: probe.httpGet.port, path: probe.httpGet.path, method: 'GET', headers, timeout: (probe.timeoutSeconds ?? 1) * 1000 }, (upRes) => {
    upRes.resume()
    res.writeHead(upRes.statusCode ?? 502, { 'content-type': 'text/plain' })
    res.end(`app probe answered ${upRes.statusCode ?? '?'}\n`)
  })
  up.on('timeout', () => { up.destroy(new Error('probe timeout')) })
  up.on('error', (err) => { if (!res.headersSent) { res.writeHead(503, { 'content-type': 'text/plain' }); res.end(`app probe failed: ${err.message}\n`) } })
  up.end()
}

export interface Admin { server: Server, port: number, close: () => Promise<void> }

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

const isLoopback = (address: string | undefined): boolean =>
  address !== undefined && LOOPBACK.check(address, address.includes(':') ? 'ipv6' : 'ipv4') // ::ffff:127.x matches the IPv4 rule

/**
 * Both ends, not only the local one: a packet from outside cannot reach 127.0.0.0/8 without
 * route_localnet and a DNAT rule, and if someone set those up, the remote end still gives it away.
 */
const onLoopback = (socket: Socket): boolean => isLoopback(socket.localAddress) && isLoopback(socket.remoteAddress)

export async function startAdmin (opts: AdminOptions): Promise<Admin> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(JSON.stringify(body))
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') { sendError(res, new MethodNotAllowedError()); return }
    if (path === '/healthz') { json(200, { status: 'ok' }); return }
    if (path === '/readyz') {
      const reasons = opts.notReady()
      json(reasons.length === 0 ? 200 : 503, reasons.length === 0 ? { status: 'ready' } : { status: 'not-ready', reasons })
      return
    }
    const probe = path === undefined ? undefined : opts.appProbes?.[path]
    if (probe !== undefined) { relayProbe(probe, res); return }
    // Off loopback only the probes above exist: one answer for every other path, so it says nothing.
    if (!onLoopback(req.socket) && !(path === '/metrics' && opts.exposeMetrics === true)) { sendError(res, new LoopbackOnlyError()); return }
    if (path === '/metrics') {
      opts.registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': opts.registry.contentType })
        res.end(text)
      }, (err: unknown) => { sendError(res, new MetricsUnavailableError({ cause: err })) })
      return
    }
    sendError(res, new NotFoundError())
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.listen.port, opts.listen.host, () => { server.off('error', reject); resolve() })
  })
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: async () => { server.closeAllConnections(); await new Promise<void>(resolve => server.close(() => { resolve() })) }
  }
}
