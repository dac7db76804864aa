import type { Registry } from 'prom-client'

// The sidecar's per-request metric updates, kept in plain numbers. A prom-client label child hashes
// and validates its label object on every call, and a histogram child allocates per observation:
// about 1.2 µs per request for the request counter, the duration and two decision-log lines (issue 21).
// Here an update is a map lookup and an addition; prom-client still renders every series.

/**
 * Counts per label key, handed to a prom-client counter when it is read: call `flush` from the
 * counter's `collect` (prom-client calls it before each scrape or get()).
 */
export class PendingCounts {
  private readonly series = new Map<string, { child: { inc: (n: number) => void }, n: number }>()
  private readonly child: (key: string) => { inc: (n: number) => void }

  /** `child`: the prom-client label child for a key, made on the key's first count. */
  constructor (child: (key: string) => { inc: (n: number) => void }) {
    this.child = child
  }

  add (key: string): void {
    let s = this.series.get(key)
    if (s === undefined) { s = { child: this.child(key), n: 0 }; this.series.set(key, s) }
    s.n++
  }

  flush (): void {
    for (const s of this.series.values()) {
      if (s.n === 0) continue
      s.child.inc(s.n)
      s.n = 0
    }
  }
}

/** One label value's series of a BucketHistogram. */
export class HistogramSeries {
  readonly labels: Readonly<Record<string, string>>
  /** Observations per bucket (not cumulative); the last is above every bound. */
  readonly counts: number[]
  sum = 0
  count = 0
  private readonly bounds: readonly number[]

  constructor (bounds: readonly number[], labels: Readonly<Record<string, string>>) {
    this.bounds = bounds
    this.labels = labels
    this.counts = new Array<number>(bounds.length + 1).fill(0)
  }

  observe (value: number): void {
    const b = this.bounds
    let i = 0
    while (i < b.length && value > b[i]!) i++
    this.counts[i]!++
    this.sum += value
    this.count++
  }
}

interface Sample { labels: Record<string, string | number>, sharedLabels: Readonly<Record<string, string>>, value: number, metricName: string }

/**
 * A histogram with one label and a series per label value made once (`series(value)`), registered
 * as a prom-client metric: the exposition is what prom-client's Histogram writes for the same
 * observations (test/hot-metrics.test.ts compares the two).
 */
export class BucketHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  /** As a prom-client metric has it (docs-metrics reads it). */
  readonly labelNames: readonly string[]
  private readonly bounds: readonly number[]
  private readonly label: string
  private readonly all = new Map<string, HistogramSeries>()

  constructor (o: { name: string, help: string, labelName: string, buckets: readonly number[], registers: Registry[] }) {
    this.name = o.name
    this.help = o.help
    this.label = o.labelName
    this.labelNames = [o.labelName]
    this.bounds = [...o.buckets].sort((a, b) => a - b)
    // prom-client takes any object with its metric methods; its types list only its own classes.
    for (const r of o.registers) r.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0])
  }

  series (value: string): HistogramSeries {
    let s = this.all.get(value)
    if (s === undefined) { s = new HistogramSeries(this.bounds, { [this.label]: value }); this.all.set(value, s) }
    return s
  }

  /** What the registry renders (prom-client's Histogram#getForPromString): bucket, sum and count samples per series. */
  async getForPromString (): Promise<{ name: string, help: string, type: string, aggregator: string, values: Sample[] }> {
    const values: Sample[] = []
    const bucket = `${this.name}_bucket`
    for (const s of this.all.values()) {
      let acc = 0
      for (let i = 0; i < this.bounds.length; i++) {
        acc += s.counts[i]!
        values.push({ labels: { le: this.bounds[i]! }, sharedLabels: s.labels, value: acc, metricName: bucket })
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: s.labels, value: s.count, metricName: bucket })
      values.push({ labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum` })
      values.push({ labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  /** The same samples with each series' label merged into its labels (prom-client's get(), for JSON). */
  async get (): Promise<{ name: string, help: string, type: string, aggregator: string, values: Array<Omit<Sample, 'sharedLabels'>> }> {
    const data = await this.getForPromString()
    return { ...data, values: data.values.map(({ sharedLabels, labels, ...v }) => ({ ...v, labels: { ...labels, ...sharedLabels } })) }
  }

  /** Zeroes every series (the sidecar's handles to them stay good). */
  reset (): void {
    for (const s of this.all.values()) { s.counts.fill(0); s.sum = 0; s.count = 0 }
  }
}
