// Latency histograms that can be merged across runs: log-scale buckets 1% wide from 1 µs, stored
// sparsely ({bucket: count}), so percentiles over several short runs are those of all their samples.

export type Histogram = Record<number, number>

const BASE = Math.log(1.01)
const FLOOR_MS = 0.001

export const bucketOf = (ms: number): number => ms <= FLOOR_MS ? 0 : Math.floor(Math.log(ms / FLOOR_MS) / BASE)
/** The middle of a bucket, in ms (within 0.5% of every value in it). */
export const valueOf = (bucket: number): number => FLOOR_MS * Math.exp((bucket + 0.5) * BASE)

export function histogramOf (values: ArrayLike<number>, n = values.length): Histogram {
  const h: Histogram = {}
  for (let i = 0; i < n; i++) { const b = bucketOf(values[i]!); h[b] = (h[b] ?? 0) + 1 }
  return h
}

export function merge (hs: Histogram[]): Histogram {
  const out: Histogram = {}
  for (const h of hs) for (const [b, c] of Object.entries(h)) out[Number(b)] = (out[Number(b)] ?? 0) + c
  return out
}

export function count (h: Histogram): number { return Object.values(h).reduce((a, b) => a + b, 0) }

/** The value at quantile p (0..1), or NaN for an empty histogram. */
export function percentile (h: Histogram, p: number): number {
  const buckets = Object.keys(h).map(Number).sort((a, b) => a - b)
  const total = count(h)
  if (total === 0) return NaN
  const rank = Math.min(total - 1, Math.floor(total * p))
  let seen = 0
  for (const b of buckets) {
    seen += h[b]!
    if (seen > rank) return valueOf(b)
  }
  return valueOf(buckets.at(-1)!)
}
