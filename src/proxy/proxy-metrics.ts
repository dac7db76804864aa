import { Registry, Counter, Gauge } from 'prom-client'
import { registerProcessMetrics } from '../process-metrics.ts'
import { BucketHistogram, PendingCounts } from './hot-metrics.ts'

// The sidecar's Prometheus metrics, one registry per proxy (tests run several in one process).

export interface ProxyMetrics {
  registry: Registry
  requests: Counter<'decision' | 'rule' | 'mode' | 'caller'>
  /** The caller label value: the SPIFFE ID for the first `maxCallers` callers seen, then "other". */
  callerLabel: (caller: string) => string
  rejected: Counter<'reason'>
  upstreamErrors: Counter<'kind'>
  duration: BucketHistogram
  handshakeFailures: Counter<'reason'>
  policyReloads: Counter<'result'>
  credentialReloads: Counter<'what' | 'result'>
  certExpiry: Gauge<'cert' | 'serial'>
  rotations: Counter
  renewalFailures: Counter<'code'>
  connections: Gauge
  decisionLines: Counter<'kind'>
  decisionLogWritable: Gauge
  decisionLogFailures: Counter
  quarantineEntries: Gauge
  quarantineCut: Counter<'kind'>
  suspicions: Counter<'detector'>
  /** Per-request updates in plain numbers, rendered by prom-client at scrape (hot-metrics.ts, issue 21). */
  countRequest: (decision: string, rule: string, mode: string, callerId: string) => void
  observeDuration: (decision: 'allow' | 'deny', seconds: number) => void
  decisionLine: (kind: string) => void
}

export function createProxyMetrics (opts: { maxCallers?: number } = {}): ProxyMetrics {
  // Each distinct label value is a time series in every Prometheus that scrapes us: cap them.
  const callers = new Set<string>()
  const maxCallers = opts.maxCallers ?? 100
  const registry = new Registry()
  registerProcessMetrics(registry)
  const registers = [registry]
  // The counts of the hot path reach these counters when they are read (collect runs before every scrape).
  const requests = new Counter({ name: 'gatehouse_requests_total', help: 'Inbound requests by policy decision, deciding rule and caller (callers past the limit are "other")', labelNames: ['decision', 'rule', 'mode', 'caller'], registers, collect: () => { requestCounts.flush() } })
  const duration = new BucketHistogram({ name: 'gatehouse_request_duration_seconds', help: 'Inbound request duration', labelName: 'decision', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers })
  const decisionLines = new Counter({ name: 'gatehouse_decision_log_lines_total', help: 'Decision-log lines written, by kind (decision, admit, checkpoint, genesis, resumed)', labelNames: ['kind'], registers, collect: () => { lineCounts.flush() } })
  const callerLabel = (caller: string): string => {
    if (callers.has(caller)) return caller
    if (callers.size >= maxCallers) return 'other'
    callers.add(caller)
    return caller
  }
  const requestCounts = new PendingCounts(key => { const [decision, rule, mode, caller] = key.split('\n') as [string, string, string, string]; return requests.labels(decision, rule, mode, caller) })
  const durationSeries = { allow: duration.series('allow'), deny: duration.series('deny') }
  const lineCounts = new PendingCounts(kind => decisionLines.labels(kind))
  return {
    registry,
    requests,
    callerLabel,
    countRequest: (decision, rule, mode, callerId) => { requestCounts.add(`${decision}\n${rule}\n${mode}\n${callerLabel(callerId)}`) },
    observeDuration: (decision, seconds) => { durationSeries[decision].observe(seconds) },
    decisionLine: (kind) => { lineCounts.add(kind) },
    duration,
    decisionLines,
    rejected: new Counter({ name: 'gatehouse_requests_rejected_total', help: 'Malformed requests refused before authorization', labelNames: ['reason'], registers }),
    upstreamErrors: new Counter({ name: 'gatehouse_upstream_errors_total', help: 'Requests the app did not answer', labelNames: ['kind'], registers }),
    handshakeFailures: new Counter({ name: 'gatehouse_tls_handshake_failures_total', help: 'Refused inbound TLS handshakes by reason', labelNames: ['reason'], registers }),
    policyReloads: new Counter({ name: 'gatehouse_policy_reloads_total', help: 'Policy loads by result', labelNames: ['result'], registers }),
    credentialReloads: new Counter({ name: 'gatehouse_credential_reloads_total', help: 'Certificate and bundle reloads by result', labelNames: ['what', 'result'], registers }),
    certExpiry: new Gauge({ name: 'gatehouse_cert_expiry_timestamp_seconds', help: 'Expiry of the workload certificate (leaf), its issuer and each trusted root', labelNames: ['cert', 'serial'], registers }),
    rotations: new Counter({ name: 'gatehouse_cert_rotations_total', help: 'Workload certificates obtained from the CA', registers }),
    renewalFailures: new Counter({ name: 'gatehouse_cert_renewal_failures_total', help: 'Failed certificate requests to the CA, by error code', labelNames: ['code'], registers }),
    decisionLogWritable: new Gauge({ name: 'gatehouse_decision_log_writable', help: '1 while the decision log can be written; 0 while it cannot (requests are refused with 503)', registers }),
    decisionLogFailures: new Counter({ name: 'gatehouse_decision_log_failures_total', help: 'Times the decision log became unwritable (disk full, file size limit, closed stdout)', registers }),
    connections: new Gauge({ name: 'gatehouse_inbound_connections', help: 'Open inbound connections', registers }),
    quarantineEntries: new Gauge({ name: 'gatehouse_quarantine_entries', help: 'Entries in the quarantine list this sidecar enforces', registers }),
    quarantineCut: new Counter({ name: 'gatehouse_quarantine_connections_closed_total', help: 'Live inbound connections closed because their caller was quarantined, by kind (http1, h2, tcp)', labelNames: ['kind'], registers }),
    suspicions: new Counter({ name: 'gatehouse_quarantine_suspicions_total', help: 'Callers a compromise detector tripped on (scan, canary, quarantined-peer), reported to the CA when there is one', labelNames: ['detector'], registers })
  }
}
