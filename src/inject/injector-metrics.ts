import { Registry, Counter, Gauge, Histogram } from 'prom-client'
import { registerProcessMetrics } from '../process-metrics.ts'
import type { AdmissionDecision } from './admission.ts'

// The injector's Prometheus metrics (docs/metrics.md), one registry per webhook server, served by
// `inject serve --metrics-listen` on a plain-HTTP listener of its own (startMetricsServer, shared
// with the CA), never on the webhook's HTTPS port.

export type AdmissionOutcomeLabel = 'patched' | 'skipped' | 'error' | 'refused'

export interface InjectorMetrics {
  registry: Registry
  /** Reviews by outcome and reason (the decision's stable reason, or the error code of a refusal). */
  admissions: Counter<'outcome' | 'reason'>
  /** Time from the request to the answer, for every review answered (HTTP 200). */
  duration: Histogram<'outcome'>
  /** Warnings returned to whoever created the pod (AdmissionReview response.warnings). */
  warnings: Counter
  /** When the webhook's serving certificate expires (unix seconds). */
  certExpiry: Gauge
}

/**
 * patched: the sidecar was added; error: the review or the pod could not be read (let through
 * unchanged, with a warning); skipped: every other answered review (not opted in, already injected,
 * hostNetwork, ...). refused is counted by the server for HTTP-level misuse (4xx, no review answered).
 */
export function admissionOutcome (d: Pick<AdmissionDecision, 'injected' | 'reason'>): AdmissionOutcomeLabel {
  if (d.injected) return 'patched'
  return d.reason === 'malformed-review' || d.reason === 'invalid-pod' ? 'error' : 'skipped'
}

export function createInjectorMetrics (): InjectorMetrics {
  const registry = new Registry()
  registerProcessMetrics(registry)
  const registers = [registry]
  return {
    registry,
    admissions: new Counter({ name: 'gatehouse_injector_admissions_total', help: 'Admission reviews by outcome (patched, skipped, error, refused) and reason', labelNames: ['outcome', 'reason'], registers }),
    duration: new Histogram({ name: 'gatehouse_injector_admission_duration_seconds', help: 'Time to answer an admission review, by outcome', labelNames: ['outcome'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers }),
    warnings: new Counter({ name: 'gatehouse_injector_warnings_total', help: 'Warnings returned in admission responses', registers }),
    certExpiry: new Gauge({ name: 'gatehouse_injector_cert_expiry_timestamp_seconds', help: 'Expiry of the webhook\'s serving certificate (files, or the SVID the injector rotates from the Gatehouse CA)', registers })
  }
}
