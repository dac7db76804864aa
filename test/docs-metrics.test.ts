import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Registry, collectDefaultMetrics } from 'prom-client'
import { startMesh } from './helpers/mesh.ts'
import { scrapeMetrics } from './helpers/inbound-probe.ts'
import { parsePrometheusText } from './helpers/prom-text.ts'
import { repoRoot } from './helpers/markdown-run.ts'
import { startCaFixture } from './helpers/ca-fixture.ts'
import { startInjector } from './helpers/injector.ts'

// docs/metrics.md lists exactly the metrics a running sidecar serves: a real sidecar (the same setup
// as test/metrics-format.test.ts) is started, sent traffic, and scraped; every metric family it
// serves must be in the table with its type and label names, and every row must be served. The
// process metrics are documented by prefix: the test checks prom-client's defaults all carry it.

interface Row { name: string, type: string, labels: string[] }

const doc = readFileSync(join(repoRoot, 'docs/metrics.md'), 'utf8')
const parseRows = (text: string): Row[] => [...text.matchAll(/^\| `(gatehouse_[a-z_]+)` \| (\w+) \| ([^|]*) \|/gm)].map(m => ({
  name: m[1]!,
  type: m[2]!,
  labels: m[3]!.trim() === '—' ? [] : m[3]!.split(',').map(l => l.trim().replace(/`/g, ''))
}))
const rows = parseRows(doc)
/** The rows of one "## heading" section: the sidecar's, the CA's, the injector's. */
const section = (heading: string): Row[] => parseRows(doc.split(/^## /m).find(s => s.startsWith(heading)) ?? '')

const DEFAULT_PREFIXES = ['gatehouse_process_', 'gatehouse_nodejs_']

t.test('docs/metrics.md lists exactly what /metrics serves, with types and labels', async t => {
  const mesh = await startMesh(t)
  t.equal((await mesh.request('/hello')).status, 200)
  const families = parsePrometheusText(await scrapeMetrics(mesh))

  // prom-client's default metrics, made the way createProxyMetrics makes them.
  const defaults = new Registry()
  collectDefaultMetrics({ register: defaults, prefix: 'gatehouse_' })
  const defaultNames = new Set(defaults.getMetricsAsArray().map(m => (m as unknown as { name: string }).name))
  for (const name of defaultNames) t.ok(DEFAULT_PREFIXES.some(p => name.startsWith(p)), `default metric ${name} has a documented prefix`)

  const served = [...families.keys()].filter(n => !defaultNames.has(n))
  t.ok(served.length >= 10, `${served.length} gatehouse metrics served`)
  const sidecarRows = section("The sidecar's metrics")
  for (const name of served) t.ok(sidecarRows.some(r => r.name === name), `${name} (served) is documented`)
  for (const r of sidecarRows) t.ok(families.has(r.name), `${r.name} (documented) is served`)
  t.equal(new Set(rows.map(r => r.name)).size, rows.length, 'each metric listed once')

  for (const r of sidecarRows) {
    const family = families.get(r.name)
    if (family === undefined) continue
    t.equal(family.type, r.type, `${r.name}: type ${r.type}`)
    const metric = mesh.sidecar.metrics.registry.getSingleMetric(r.name) as unknown as { labelNames: string[] } | undefined
    t.same([...(metric?.labelNames ?? [])].sort(), [...r.labels].sort(), `${r.name}: labels ${r.labels.join(', ') || 'none'}`)
    // And what the exposition actually carries agrees (histogram buckets add "le").
    for (const s of family.samples) t.same(Object.keys(s.labels).filter(l => l !== 'le').sort(), [...r.labels].sort(), `${s.name} sample labels`)
  }
})

t.test('the CA\'s and the injector\'s tables list exactly what they serve', async t => {
  const ca = await startCaFixture(t)
  const injector = await startInjector(t)
  t.equal((await injector.post('/mutate', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u1', kind: { kind: 'Pod' }, operation: 'CREATE', object: { metadata: {}, spec: { containers: [{ name: 'app', image: 'a' }] } } } })).status, 200)
  const defaults = new Set(new Registry().getMetricsAsArray().map(m => (m as unknown as { name: string }).name))
  for (const [heading, registry] of [["The CA's metrics", ca.running.metrics.registry], ["The injector's metrics", injector.running.metrics.registry]] as const) {
    const documented = section(heading)
    const families = parsePrometheusText(await registry.metrics())
    const served = [...families.keys()].filter(n => !defaults.has(n) && !DEFAULT_PREFIXES.some(p => n.startsWith(p)))
    t.ok(served.length >= 3, `${heading}: ${served.length} metrics served`)
    for (const name of served) t.ok(documented.some(r => r.name === name), `${heading}: ${name} (served) is documented`)
    for (const r of documented) {
      t.ok(families.has(r.name), `${heading}: ${r.name} (documented) is served`)
      t.equal(families.get(r.name)?.type, r.type, `${r.name}: type ${r.type}`)
      const metric = registry.getSingleMetric(r.name) as unknown as { labelNames: string[] } | undefined
      t.same([...(metric?.labelNames ?? [])].sort(), [...r.labels].sort(), `${r.name}: labels ${r.labels.join(', ') || 'none'}`)
    }
  }
})

t.test('metrics are only made in src/proxy, src/ca/ca-metrics.ts and src/inject/injector-metrics.ts (served by src/metrics-server.ts; process metrics from src/process-metrics.ts)', async t => {
  const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap(e => e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [])
  const users = files(join(repoRoot, 'src')).filter(f => readFileSync(f, 'utf8').includes('prom-client')).map(f => f.slice(repoRoot.length))
  t.ok(users.length > 0 && users.every(f => f.startsWith('src/proxy/') || f === 'src/ca/ca-metrics.ts' || f === 'src/inject/injector-metrics.ts' || f === 'src/metrics-server.ts' || f === 'src/process-metrics.ts'), `prom-client used only there: ${users.join(', ')}`)
})

t.test('metric names mentioned anywhere in the docs are ones the table lists', async t => {
  const documented = new Set(rows.map(r => r.name))
  for (const file of ['README.md', 'docs/metrics.md', 'docs/errors.md', 'docs/threat-model.md', 'docs/policy.md', 'docs/sidecar.md', 'docs/ca.md', 'docs/audit.md', 'docs/development.md']) {
    const text = readFileSync(join(repoRoot, file), 'utf8')
    for (const name of new Set([...text.matchAll(/\bgatehouse_[a-z_]+/g)].map(m => m[0]))) {
      if (name.endsWith('_')) continue // a prefix, e.g. gatehouse_process_
      t.ok(documented.has(name.replace(/_(bucket|count|sum)$/, '')), `${file} names ${name}, a documented metric`)
    }
  }
})
