import { collectDefaultMetrics, type Registry } from 'prom-client'

// Every component's process metrics (gatehouse_process_*, gatehouse_nodejs_*, docs/metrics.md).
// The event-loop delay is sampled every 100 ms instead of prom-client's 10 ms: its timer was the
// only thing that woke an idle sidecar 100 times a second (1.1 % of a core idle, 0.2 % with 100 ms;
// bench/README.md, issue 21), in every pod. A stall shorter than that can go unseen by the lag
// percentiles; the gatehouse_nodejs_eventloop_lag_seconds gauge still measures the loop at each scrape.
export const EVENT_LOOP_SAMPLE_MS = 100

export function registerProcessMetrics (registry: Registry): void {
  collectDefaultMetrics({ register: registry, prefix: 'gatehouse_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS })
}
