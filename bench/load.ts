import { Pool, type Dispatcher } from 'undici'
import { histogramOf, type Histogram } from './lib/histogram.ts'

// Load generators on undici. All three record latencies and count errors by kind.
// - runLoad: closed loop, keep-alive: `connections` clients each send one request at a time.
// - runOpenLoad: open model at a fixed rate: request i is due at start + i/rate, sent then whether
//   or not earlier ones have been answered, and its latency counts from that scheduled time, so a
//   stall shows up in every request it delays (no coordinated omission).
// - runHandshakes: a fresh connection per request (`reset`: the connection closes after the response;
//   the caller's dispatcher must not resume TLS sessions), `connections` at a time.

export interface LoadResult {
  requests: number
  errors: number
  errorKinds: Record<string, number>
  seconds: number
  rps: number
  p50: number
  p90: number
  p99: number
  p999: number
  max: number
  /** Every latency, bucketed (bench/lib/histogram.ts): mergeable across runs. */
  histogram: Histogram
}

export interface OpenLoadResult extends LoadResult {
  rate: number
  /** How late the generator itself sent requests (ms): its own noise floor. */
  sendLagP99: number
  sendLagMax: number
  sendLagHistogram: Histogram
}

export interface RequestShape { path?: string, headers?: Record<string, string> }

const DEFAULT_PATH = '/v1/bench'

class Recorder {
  latencies: Float64Array
  n = 0
  errors = 0
  errorKinds: Record<string, number> = {}
  constructor (capacity = 1 << 16) { this.latencies = new Float64Array(capacity) }
  ok (ms: number): void {
    if (this.n === this.latencies.length) { const bigger = new Float64Array(this.n * 2); bigger.set(this.latencies); this.latencies = bigger }
    this.latencies[this.n++] = ms
  }

  fail (kind: string): void { this.errors++; this.errorKinds[kind] = (this.errorKinds[kind] ?? 0) + 1 }
  async send (dispatcher: Dispatcher, origin: string, shape: RequestShape, from: number, reset = false): Promise<void> {
    try {
      const res = await dispatcher.request({ origin, path: shape.path ?? DEFAULT_PATH, method: 'GET', ...(shape.headers === undefined ? {} : { headers: shape.headers }), ...(reset ? { reset: true } : {}) })
      await res.body.dump({ limit: 1 << 20 })
      if (res.statusCode !== 200) this.fail(`HTTP ${res.statusCode}`)
      else this.ok(performance.now() - from)
    } catch (err) { this.fail((err as { code?: string }).code ?? (err as Error).message) }
  }

  result (seconds: number): LoadResult {
    const sorted = this.latencies.subarray(0, this.n).sort()
    const pct = (p: number): number => this.n === 0 ? NaN : sorted[Math.min(this.n - 1, Math.floor(this.n * p))]!
    return { requests: this.n, errors: this.errors, errorKinds: this.errorKinds, seconds, rps: this.n / seconds, p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), p999: pct(0.999), max: this.n === 0 ? NaN : sorted[this.n - 1]!, histogram: histogramOf(sorted) }
  }
}

/** `dispatcher` (e.g. a warmed-up Pool, or a ProxyAgent for the outbound path) replaces the default keep-alive pool to `origin`. */
export async function runLoad (origin: string, opts: { connections: number, seconds: number, path?: string, headers?: Record<string, string>, connect?: Pool.Options['connect'], dispatcher?: Dispatcher }): Promise<LoadResult> {
  const pool: Dispatcher = opts.dispatcher ?? new Pool(origin, { connections: opts.connections, pipelining: 1, keepAliveTimeout: 60_000, ...(opts.connect === undefined ? {} : { connect: opts.connect }) })
  const rec = new Recorder()
  const deadline = performance.now() + opts.seconds * 1000
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) await rec.send(pool, origin, opts, performance.now())
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: opts.connections }, worker))
  const seconds = (performance.now() - start) / 1000
  if (opts.dispatcher === undefined) await pool.close()
  return rec.result(seconds)
}

export async function runOpenLoad (origin: string, dispatcher: Dispatcher, opts: RequestShape & { rate: number, seconds: number }): Promise<OpenLoadResult> {
  const total = Math.max(1, Math.round(opts.rate * opts.seconds))
  const interval = 1000 / opts.rate
  const rec = new Recorder(total)
  const lags = new Float64Array(total)
  const start = performance.now() + 5
  let next = 0
  let settled = 0
  await new Promise<void>((resolve) => {
    // Requests still unanswered 30 s after the last was due are counted as timeouts.
    const guard = setTimeout(() => { for (let i = settled; i < total; i++) rec.fail('timeout (no answer 30 s after the run)'); resolve() }, opts.seconds * 1000 + 30_000)
    const done = (): void => { if (++settled === total) { clearTimeout(guard); resolve() } }
    const tick = (): void => {
      const now = performance.now()
      while (next < total && start + next * interval <= now) {
        const due = start + next * interval
        lags[next++] = now - due
        void rec.send(dispatcher, origin, opts, due).then(done)
      }
      if (next >= total) return
      // Sleep while the next send is far off; spin through the event loop (I/O still runs) when it is near.
      const wait = start + next * interval - performance.now()
      if (wait > 3) setTimeout(tick, wait - 2)
      else setImmediate(tick)
    }
    tick()
  })
  const r = rec.result((performance.now() - start) / 1000)
  const sortedLags = lags.sort()
  return { ...r, rps: r.requests / opts.seconds, rate: opts.rate, sendLagP99: sortedLags[Math.floor(total * 0.99)] ?? NaN, sendLagMax: sortedLags[total - 1] ?? NaN, sendLagHistogram: histogramOf(sortedLags) }
}

export async function runHandshakes (origin: string, dispatcher: Dispatcher, opts: RequestShape & { connections: number, seconds: number }): Promise<LoadResult> {
  const rec = new Recorder()
  const deadline = performance.now() + opts.seconds * 1000
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) await rec.send(dispatcher, origin, opts, performance.now(), true)
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: opts.connections }, worker))
  return rec.result((performance.now() - start) / 1000)
}
