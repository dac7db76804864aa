import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Registry, Counter, Histogram, Gauge, collectDefaultMetrics } from 'prom-client'
import type { Logger } from '../log.ts'
import type { CaMaterial } from './store.ts'

// The CA's Prometheus metrics (docs/metrics.md), one registry per CA server (tests run several in
// one process), served by `ca serve --metrics-listen` on a plain-HTTP listener of its own: never on
// the mTLS API port, whose clients are sidecars, not Prometheus.

export interface CaMetrics {
  registry: Registry
  /** POST /v1/svid by result (issued, refused), error code ("" when issued) and attestation kind. */
  svidRequests: Counter<'result' | 'code' | 'attestation'>
  /** Every API request, by route, from its first byte to the end of the response. */
  duration: Histogram<'route'>
  /** POST /v1/reports by outcome. */
  reports: Counter<'outcome'>
  certExpiry: Gauge<'cert' | 'serial'>
  quarantineEntries: Gauge
  /** What the expiry and quarantine gauges read at each scrape (the CA's material changes on reload). */
  watch: (source: { ca: () => CaMaterial, quarantineEntries: () => number }) => void
}

/** The route label: the API's own paths, and "other" for anything else (a scanner cannot add series). */
export const CA_ROUTES = ['/v1/svid', '/v1/bundle', '/v1/quarantine', '/v1/reports', '/healthz'] as const
export const caRoute = (path: string): string => (CA_ROUTES as readonly string[]).includes(path) ? path : 'other'

/** A report's outcome as a label: "recorded (1 of 2 reporters)" is "recorded". */
export const reportOutcome = (outcome: string): string => outcome.split(' ')[0]!

export function createCaMetrics (): CaMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'gatehouse_' })
  const registers = [registry]
  let source: { ca: () => CaMaterial, quarantineEntries: () => number } | undefined
  const certExpiry = new Gauge({
    name: 'gatehouse_ca_cert_expiry_timestamp_seconds',
    help: 'Expiry of the CA\'s issuer certificate and of each root in its trust bundle',
    labelNames: ['cert', 'serial'],
    registers,
    collect () {
      this.reset()
      if (source === undefined) return
      const ca = source.ca()
      this.set({ cert: 'issuer', serial: ca.issuer.serialHex }, Math.floor(ca.issuer.notAfter.getTime() / 1000))
      for (const root of ca.bundle.authoritiesFor(ca.trustDomain)) this.set({ cert: 'root', serial: root.serialHex }, Math.floor(root.notAfter.getTime() / 1000))
    }
  })
  const quarantineEntries = new Gauge({
    name: 'gatehouse_ca_quarantine_entries',
    help: 'Entries in the CA\'s quarantine list (DIR/quarantine.yaml)',
    registers,
    collect () { if (source !== undefined) this.set(source.quarantineEntries()) }
  })
  return {
    registry,
    certExpiry,
    quarantineEntries,
    svidRequests: new Counter({ name: 'gatehouse_ca_svid_requests_total', help: 'SVID requests by result (issued, refused), error code and attestation kind', labelNames: ['result', 'code', 'attestation'], registers }),
    duration: new Histogram({ name: 'gatehouse_ca_request_duration_seconds', help: 'CA API request duration by route', labelNames: ['route'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers }),
    reports: new Counter({ name: 'gatehouse_ca_quarantine_reports_total', help: 'Quarantine reports from sidecars by outcome', labelNames: ['outcome'], registers }),
    watch: (s) => { source = s }
  }
}

export interface MetricsServer { server: Server, port: number, close: () => Promise<void> }

/**
 * GET /metrics (and /healthz) over plain HTTP: the CA's and the injector's `--metrics-listen`.
 * Everything on this listener is meant for a scraper; it carries no secret and accepts no input.
 */
export async function startMetricsServer (registry: Registry, listen: { host: string, port: number }, logger: Logger, event: string): Promise<MetricsServer> {
  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 30_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    const json = (status: number, body: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)) }
    if (req.method !== 'GET' && req.method !== 'HEAD') { json(405, { error: 'method_not_allowed' }); return }
    if (path === '/healthz') { json(200, { status: 'ok' }); return }
    if (path !== '/metrics') { json(404, { error: 'not_found' }); return }
    registry.metrics().then((text) => {
      res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' })
      res.end(text)
    }, (err: unknown) => {
      logger.error({ err }, 'cannot render metrics')
      json(500, { error: 'metrics_unavailable' })
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(listen.port, listen.host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  logger.info({ event, host: listen.host, port }, 'metrics listening')
  return {
    server,
    port,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => { resolve() }))
    }
  }
}
