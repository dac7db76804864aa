// A token bucket per key (here: per SPIFFE ID). Buckets that refilled completely are forgotten, and
// the number of tracked keys is capped so a flood of distinct identities cannot grow memory.

export interface RateLimitOptions { burst: number, perMinute: number, maxKeys?: number, now?: () => number }

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number, at: number }>()
  private readonly burst: number
  private readonly perMs: number
  private readonly maxKeys: number
  private readonly now: () => number

  constructor (opts: RateLimitOptions) {
    this.burst = opts.burst
    this.perMs = opts.perMinute / 60_000
    this.maxKeys = opts.maxKeys ?? 100_000
    this.now = opts.now ?? Date.now
  }

  /** Takes one token; returns 0 when allowed, else the seconds to wait. */
  take (key: string): number {
    const now = this.now()
    const b = this.buckets.get(key) ?? { tokens: this.burst, at: now }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.perMs)
    b.at = now
    if (b.tokens < 1) {
      this.buckets.set(key, b)
      return Math.max(1, Math.ceil((1 - b.tokens) / this.perMs / 1000))
    }
    b.tokens -= 1
    this.buckets.delete(key) // re-insert: Map order doubles as least-recently-used order
    this.buckets.set(key, b)
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!)
    return 0
  }
}
