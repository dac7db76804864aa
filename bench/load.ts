import { Pool, type Dispatcher } from 'undici'

// A closed-loop keep-alive load generator: `connections` clients each send one request at a time for
// `seconds`, recording every latency. Reports requests/s and latency percentiles.

export interface LoadResult { requests: number, errors: number, errorKinds: Record<string, number>, seconds: number, rps: number, p50: number, p90: number, p99: number, max: number }

/** `dispatcher` (e.g. a ProxyAgent for the outbound path) replaces the default keep-alive pool to `origin`. */
export async function runLoad (origin: string, opts: { connections: number, seconds: number, path?: string, connect?: Pool.Options['connect'], dispatcher?: Dispatcher }): Promise<LoadResult> {
  const pool: Dispatcher = opts.dispatcher ?? new Pool(origin, { connections: opts.connections, pipelining: 1, keepAliveTimeout: 60_000, ...(opts.connect === undefined ? {} : { connect: opts.connect }) })
  const latencies: number[] = []
  let errors = 0
  const errorKinds: Record<string, number> = {}
  const fail = (kind: string): void => { errors++; errorKinds[kind] = (errorKinds[kind] ?? 0) + 1 }
  const deadline = performance.now() + opts.seconds * 1000
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now()
      try {
        const res: Dispatcher.ResponseData = await pool.request({ origin, path: opts.path ?? '/v1/bench', method: 'GET' })
        await res.body.dump()
        if (res.statusCode !== 200) fail(`HTTP ${res.statusCode}`)
        else latencies.push(performance.now() - t0)
      } catch (err) { fail((err as { code?: string }).code ?? (err as Error).message) }
    }
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: opts.connections }, worker))
  const seconds = (performance.now() - start) / 1000
  if (opts.dispatcher === undefined) await pool.close()
  latencies.sort((a, b) => a - b)
  const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? NaN
  return { requests: latencies.length, errors, errorKinds, seconds, rps: latencies.length / seconds, p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: latencies.at(-1) ?? NaN }
}
