import { Pool, type Dispatcher } from 'undici'

// A closed-loop keep-alive load generator: `connections` clients each send one request at a time for
// `seconds`, recording every latency. Reports requests/s and latency percentiles.

export interface LoadResult { requests: number, errors: number, seconds: number, rps: number, p50: number, p90: number, p99: number, max: number }

export async function runLoad (origin: string, opts: { connections: number, seconds: number, path?: string, connect?: Pool.Options['connect'] }): Promise<LoadResult> {
  const pool = new Pool(origin, { connections: opts.connections, pipelining: 1, keepAliveTimeout: 60_000, ...(opts.connect === undefined ? {} : { connect: opts.connect }) })
  const latencies: number[] = []
  let errors = 0
  const deadline = performance.now() + opts.seconds * 1000
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now()
      try {
        const res: Dispatcher.ResponseData = await pool.request({ path: opts.path ?? '/v1/bench', method: 'GET' })
        await res.body.dump()
        if (res.statusCode !== 200) errors++
        else latencies.push(performance.now() - t0)
      } catch { errors++ }
    }
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: opts.connections }, worker))
  const seconds = (performance.now() - start) / 1000
  await pool.close()
  latencies.sort((a, b) => a - b)
  const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? NaN
  return { requests: latencies.length, errors, seconds, rps: latencies.length / seconds, p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: latencies.at(-1) ?? NaN }
}
