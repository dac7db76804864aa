import { Pool, type Dispatcher } from 'undici'
import { histogramOf, type Histogram } from './lib/histogram.ts'

// Load generators. All record latencies and count errors by kind; the timing loops are the same for
// every protocol (closedLoop, openLoop), only the call differs:
// - runLoad: closed loop, keep-alive: `connections` clients each send one request at a time.
// - runOpenLoad: open model at a fixed rate: request i is due at start + i/rate, sent then whether
//   or not earlier ones have been answered, and its latency counts from that scheduled time, so a
//   stall shows up in every request it delays (no coordinated omission).
// - runHandshakes: a fresh connection per request (`reset`: the connection closes after the response;
//   the caller's dispatcher must not resume TLS sessions), `connections` at a time.
// - openIdle: connections that each make exactly one request and then stay open and idle, for the
//   memory a kept-alive connection costs the server (bench/measure/idle.ts).
// Those send HTTP/1.1 requests with undici; grpc-load-worker.ts drives closedLoop and openLoop
// with gRPC calls on HTTP/2 streams.

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

/** One request or call: resolves to null once it succeeded, or to what kind of failure it was (a rejection counts as one too). */
export type Call = () => Promise<string | null>

const DEFAULT_PATH = '/v1/bench'

export class Recorder {
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
  /** Runs one call; its latency counts from `from` (when it was sent, or when it was due). */
  async time (call: Call, from: number): Promise<void> {
    try {
      const failure = await call()
      if (failure === null) this.ok(performance.now() - from)
      else this.fail(failure)
    } catch (err) { this.fail((err as { code?: string }).code ?? (err as Error).message) }
  }

  result (seconds: number): LoadResult {
    const sorted = this.latencies.subarray(0, this.n).sort()
    const pct = (p: number): number => this.n === 0 ? NaN : sorted[Math.min(this.n - 1, Math.floor(this.n * p))]!
    return { requests: this.n, errors: this.errors, errorKinds: this.errorKinds, seconds, rps: this.n / seconds, p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), p999: pct(0.999), max: this.n === 0 ? NaN : sorted[this.n - 1]!, histogram: histogramOf(sorted) }
  }
}

/** A GET of `shape.path` on `dispatcher`, its body read and dropped; anything but 200 is a failure. */
export function httpCall (dispatcher: Dispatcher, origin: string, shape: RequestShape, reset = false): Call {
  const opts = { origin, path: shape.path ?? DEFAULT_PATH, method: 'GET' as const, ...(shape.headers === undefined ? {} : { headers: shape.headers }), ...(reset ? { reset: true } : {}) }
  return async () => {
    const res = await dispatcher.request(opts)
    await res.body.dump({ limit: 1 << 20 })
    return res.statusCode === 200 ? null : `HTTP ${res.statusCode}`
  }
}

/** Closed loop: `concurrency` callers, each making one call at a time, for `seconds`. */
export async function closedLoop (concurrency: number, seconds: number, call: Call): Promise<LoadResult> {
  const rec = new Recorder()
  const deadline = performance.now() + seconds * 1000
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) await rec.time(call, performance.now())
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: concurrency }, worker))
  return rec.result((performance.now() - start) / 1000)
}

/** Open model: call i is due at start + i/rate and made then, answered or not the ones before; its latency counts from when it was due. */
export async function openLoop (rate: number, seconds: number, call: Call): Promise<OpenLoadResult> {
  const total = Math.max(1, Math.round(rate * seconds))
  const interval = 1000 / rate
  const rec = new Recorder(total)
  const lags = new Float64Array(total)
  const start = performance.now() + 5
  let next = 0
  let settled = 0
  await new Promise<void>((resolve) => {
    // Requests still unanswered 30 s after the last was due are counted as timeouts.
    const guard = setTimeout(() => { for (let i = settled; i < total; i++) rec.fail('timeout (no answer 30 s after the run)'); resolve() }, seconds * 1000 + 30_000)
    const done = (): void => { if (++settled === total) { clearTimeout(guard); resolve() } }
    const tick = (): void => {
      const now = performance.now()
      while (next < total && start + next * interval <= now) {
        const due = start + next * interval
        lags[next++] = now - due
        void rec.time(call, due).then(done)
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
  return { ...r, rps: r.requests / seconds, rate, sendLagP99: sortedLags[Math.floor(total * 0.99)] ?? NaN, sendLagMax: sortedLags[total - 1] ?? NaN, sendLagHistogram: histogramOf(sortedLags) }
}

/** `dispatcher` (e.g. a warmed-up Pool, or a ProxyAgent for the outbound path) replaces the default keep-alive pool to `origin`. */
export async function runLoad (origin: string, opts: { connections: number, seconds: number, path?: string, headers?: Record<string, string>, connect?: Pool.Options['connect'], dispatcher?: Dispatcher }): Promise<LoadResult> {
  const pool: Dispatcher = opts.dispatcher ?? new Pool(origin, { connections: opts.connections, pipelining: 1, keepAliveTimeout: 60_000, ...(opts.connect === undefined ? {} : { connect: opts.connect }) })
  const r = await closedLoop(opts.connections, opts.seconds, httpCall(pool, origin, opts))
  if (opts.dispatcher === undefined) await pool.close()
  return r
}

export async function runOpenLoad (origin: string, dispatcher: Dispatcher, opts: RequestShape & { rate: number, seconds: number }): Promise<OpenLoadResult> {
  return await openLoop(opts.rate, opts.seconds, httpCall(dispatcher, origin, opts))
}

export async function runHandshakes (origin: string, dispatcher: Dispatcher, opts: RequestShape & { connections: number, seconds: number }): Promise<LoadResult> {
  return await closedLoop(opts.connections, opts.seconds, httpCall(dispatcher, origin, opts, true))
}

// Idle connections are opened this many at a time, as in the handshake phase: the proxies then need
// no more upstream connections to the app than they already hold, so the memory added from step to
// step is that of the client connections.
export const IDLE_CONCURRENCY = 16

/**
 * `count` more dispatchers from `open` (each its own connection), `concurrency` at a time, each making
 * exactly one call, recorded in `rec`; every one is added to `kept`, where its connection stays open
 * and idle until the caller closes it.
 */
export async function openIdle (rec: Recorder, kept: Dispatcher[], open: () => Dispatcher, origin: string, shape: RequestShape, opts: { count: number, concurrency: number }): Promise<void> {
  let left = opts.count
  const opener = async (): Promise<void> => {
    while (left > 0) {
      left-- // before the await: the other openers must see this one taken
      const d = open()
      kept.push(d)
      await rec.time(httpCall(d, origin, shape), performance.now())
    }
  }
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, opts.count) }, opener))
}
