import { Registry, Counter, Histogram, Gauge } from 'prom-client'
import { registerProcessMetrics } from '../process-metrics.ts'
import type { CaMaterial } from './ca-directory.ts'

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
  /** The bundle publisher (bundle-publisher.ts): each ConfigMap and webhook configuration per round, by result. */
  bundlePublish: Counter<'target' | 'result'>
  /** When the last publisher round ended without an error (unix seconds). */
  bundlePublishedAt: Gauge
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
  registerProcessMetrics(registry)
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
    bundlePublish: new Counter({ name: 'gatehouse_ca_bundle_publish_total', help: 'Trust-bundle publisher: ConfigMaps and webhook configurations per round, by target (configmap, webhook) and result (created, updated, unchanged, failed)', labelNames: ['target', 'result'], registers }),
    bundlePublishedAt: new Gauge({ name: 'gatehouse_ca_bundle_published_timestamp_seconds', help: 'When the trust-bundle publisher last completed a round without an error', registers }),
    reports: new Counter({ name: 'gatehouse_ca_quarantine_reports_total', help: 'Quarantine reports from sidecars by outcome', labelNames: ['outcome'], registers }),
    watch: (s) => { source = s }
  }
}
