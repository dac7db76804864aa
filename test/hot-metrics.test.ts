import t from 'tap'
import { Counter, Histogram, Registry } from 'prom-client'
import { BucketHistogram, PendingCounts } from '../src/proxy/hot-metrics.ts'
import { createProxyMetrics } from '../src/proxy/proxy-metrics.ts'
import { parsePrometheusText, type Sample } from './helpers/prom-text.ts'

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

t.test('BucketHistogram writes what prom-client\'s Histogram writes for the same observations', async t => {
  const ours = new Registry()
  const theirs = new Registry()
  const h = new BucketHistogram({ name: 'x_seconds', help: 'a "help" \\ text', labelName: 'decision', buckets: BUCKETS, registers: [ours] })
  const p = new Histogram({ name: 'x_seconds', help: 'a "help" \\ text', labelNames: ['decision'], buckets: BUCKETS, registers: [theirs] })
  t.equal(await ours.metrics(), await theirs.metrics(), 'no series yet: the same header')
  // Every bound exactly (a value equal to a bound is in that bucket), between them, above them all, zero.
  const values = [...BUCKETS, ...BUCKETS.map(b => b * 1.5), 0, 11, 1e6]
  for (let i = 0; i < 2000; i++) values.push(Math.random() ** 3 * 12)
  const allow = h.series('allow')
  for (const [i, v] of values.entries()) {
    const decision = i % 3 === 1 ? 'deny' : 'allow'
    if (decision === 'allow') allow.observe(v)
    else h.series('deny').observe(v)
    p.observe({ decision }, v)
  }
  t.equal(await ours.metrics(), await theirs.metrics(), 'byte for byte, two series')
  t.match((await h.get()).values[0], { metricName: 'x_seconds_bucket', labels: { le: 0.0005, decision: 'allow' } }, 'get() (the JSON form) merges the series label into each sample\'s labels')
  t.same(h.series('allow'), allow, 'a series is made once per label value')

  h.reset()
  const zeroed = parsePrometheusText(await ours.metrics()).get('x_seconds')!.samples
  t.ok(zeroed.length > 0 && zeroed.every(s => s.value === 0), 'reset zeroes the series; the handles stay good')
  allow.observe(0.002)
  t.equal(parsePrometheusText(await ours.metrics()).get('x_seconds')!.samples.find(s => s.name === 'x_seconds_count' && s.labels.decision === 'allow')?.value, 1)
})

t.test('PendingCounts reach the counter when it is read, once, beside its own increments', async t => {
  const registry = new Registry()
  const c = new Counter({ name: 'y_total', help: 'y', labelNames: ['kind'], registers: [registry], collect: () => { counts.flush() } })
  const counts = new PendingCounts(kind => c.labels(kind))
  const read = async (): Promise<Record<string, number>> => Object.fromEntries(parsePrometheusText(await registry.metrics()).get('y_total')!.samples.map(s => [s.labels.kind, s.value]))
  for (let i = 0; i < 5; i++) counts.add('admit')
  counts.add('decision')
  c.inc({ kind: 'checkpoint' })
  t.same(await read(), { admit: 5, decision: 1, checkpoint: 1 })
  t.same(await read(), { admit: 5, decision: 1, checkpoint: 1 }, 'a second scrape counts nothing twice')
  counts.add('admit')
  c.inc({ kind: 'admit' }, 2)
  t.same(await read(), { admit: 8, decision: 1, checkpoint: 1 }, 'pending and direct increments add up')
  t.same((await c.get()).values.find(v => v.labels.kind === 'admit')?.value, 8, 'get() flushes too')
})

t.test('the proxy\'s per-request updates, as a scrape sees them', async t => {
  const m = createProxyMetrics({ maxCallers: 1 })
  const a = 'spiffe://example.org/ns/a/sa/a'
  m.countRequest('allow', 'r1', 'enforce', a)
  m.countRequest('allow', 'r1', 'enforce', a)
  m.countRequest('deny', '', 'enforce', 'spiffe://example.org/ns/b/sa/b')
  m.observeDuration('allow', 0.003)
  m.observeDuration('deny', 20)
  m.decisionLine('admit')
  m.decisionLine('decision')
  m.decisionLine('decision')
  const families = parsePrometheusText(await m.registry.metrics())
  const samples = (name: string): Sample[] => families.get(name)?.samples ?? []
  t.same(samples('gatehouse_requests_total').map(s => [s.labels.decision, s.labels.rule, s.labels.caller, s.value]), [['allow', 'r1', a, 2], ['deny', '', 'other', 1]])
  t.same(samples('gatehouse_decision_log_lines_total').map(s => [s.labels.kind, s.value]), [['admit', 1], ['decision', 2]])
  const duration = samples('gatehouse_request_duration_seconds')
  t.equal(duration.find(s => s.name.endsWith('_bucket') && s.labels.decision === 'allow' && s.labels.le === '0.0025')?.value, 0)
  t.equal(duration.find(s => s.name.endsWith('_bucket') && s.labels.decision === 'allow' && s.labels.le === '0.005')?.value, 1)
  t.equal(duration.find(s => s.name.endsWith('_bucket') && s.labels.decision === 'deny' && s.labels.le === '10')?.value, 0, 'above the last bound')
  t.equal(duration.find(s => s.name.endsWith('_bucket') && s.labels.decision === 'deny' && s.labels.le === '+Inf')?.value, 1)
  t.equal(duration.find(s => s.name.endsWith('_sum') && s.labels.decision === 'deny')?.value, 20)
})
