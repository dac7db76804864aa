import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'

// The admin listener (loopback by default): liveness, readiness and Prometheus metrics. Readiness is
// the honest one: ready only with a valid identity and a loaded policy, so Kubernetes keeps traffic
// away from a sidecar that could only deny or fail.

export interface AdminOptions {
  listen: { host: string, port: number }
  registry: Registry
  /** Returns the reasons the proxy is not ready; empty when ready. */
  notReady: () => string[]
}

export interface Admin { server: Server, port: number, close: () => Promise<void> }

export async function startAdmin (opts: AdminOptions): Promise<Admin> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(JSON.stringify(body))
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') { json(405, { error: 'method_not_allowed' }); return }
    if (path === '/healthz') { json(200, { status: 'ok' }); return }
    if (path === '/readyz') {
      const reasons = opts.notReady()
      json(reasons.length === 0 ? 200 : 503, reasons.length === 0 ? { status: 'ready' } : { status: 'not-ready', reasons })
      return
    }
    if (path === '/metrics') {
      opts.registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': opts.registry.contentType })
        res.end(text)
      }, () => { json(500, { error: 'metrics_unavailable' }) })
      return
    }
    json(404, { error: 'not_found' })
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
