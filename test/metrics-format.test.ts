import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { startMesh } from './helpers/mesh.ts'
import { adminGet, clientTls, tlsAttempt } from './helpers/inbound-probe.ts'
import { parsePrometheusText, PromParseError, type Family } from './helpers/prom-text.ts'
import { createProxyMetrics } from '../src/proxy/proxy-metrics.ts'
import { pemToDers } from '../src/x509/certificate.ts'
import { waitFor } from './helpers/wait.ts'

// /metrics is valid Prometheus text exposition (checked by a strict parser, itself checked first),
// with the names and labels the README promises: requests by decision, rule and caller (callers
// capped, the rest folded into "other"), decision-log lines by kind, certificate expiry for leaf,
// issuer and roots, and a duration histogram with cumulative buckets.

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'

const must = (families: Map<string, Family>, name: string): Family => {
  const f = families.get(name)
  if (f === undefined) throw new Error(`no metric family ${name}`)
  return f
}

t.test('the strict parser refuses what the format forbids', async t => {
  const ok = '# HELP a_total Some \\\\ help\\nmore\n# TYPE a_total counter\na_total{x="q\\"uote",y="back\\\\slash",z="new\\nline",} 3 1700000000000\n\n# a comment\nb 1.5e3\nc NaN\nd -Inf\n'
  const parsed = parsePrometheusText(ok)
  t.same(parsed.get('a_total')?.samples[0]?.labels, { x: 'q"uote', y: 'back\\slash', z: 'new\nline' }, 'label escapes undone')
  t.equal(parsed.get('a_total')?.help, 'Some \\ help\nmore', 'HELP escapes undone')
  t.equal(parsed.get('b')?.samples[0]?.value, 1500)
  const hist = (buckets: string): string => `# TYPE h histogram\n${buckets}h_sum 1\nh_count 3\n`
  const bad: Array<[string, string, RegExp]> = [
    ['no final newline', 'a 1', /newline/],
    ['unknown escape', 'a{x="\\t"} 1\n', /invalid escape/],
    ['unquoted label value', 'a{x=1} 1\n', /not quoted/],
    ['repeated label', 'a{x="1",x="2"} 1\n', /repeated/],
    ['bad metric name', '1a 1\n', /metric name/],
    ['bad label name', 'a{1x="1"} 1\n', /invalid label name/],
    ['bad value', 'a one\n', /not a sample value/],
    ['a value with a unit', 'a 1s\n', /not a sample value/],
    ['second TYPE', '# TYPE a counter\n# TYPE a counter\n', /second TYPE/],
    ['TYPE after samples', 'a 1\n# TYPE a counter\n', /after its samples/],
    ['interleaved families', 'a{x="1"} 1\nb 1\na{x="2"} 1\n', /not contiguous/],
    ['repeated series', 'a{x="1",y="2"} 1\na{y="2",x="1"} 2\n', /repeated/],
    ['negative counter', '# TYPE a counter\na -1\n', /counter/],
    ['non-cumulative buckets', hist('h_bucket{le="1"} 2\nh_bucket{le="2"} 1\nh_bucket{le="+Inf"} 3\n'), /not cumulative/],
    ['no +Inf bucket', hist('h_bucket{le="1"} 2\nh_bucket{le="2"} 3\n'), /\+Inf/],
    ['+Inf differs from _count', hist('h_bucket{le="1"} 2\nh_bucket{le="+Inf"} 2\n'), /differs/]
  ]
  for (const [what, text, message] of bad) t.throws(() => parsePrometheusText(text), { name: PromParseError.name, message }, what)
  t.doesNotThrow(() => parsePrometheusText(hist('h_bucket{le="1"} 2\nh_bucket{le="+Inf"} 3\n')), 'a valid histogram')
})

t.test('/metrics after traffic: valid exposition with the promised names and labels', async t => {
  const mesh = await startMesh(t, {
    policy: `version: 1\nrules:\n  - name: reads\n    from: ["${CLIENT}"]\n    methods: [GET]\n`,
    sidecar: { checkpointEvery: 3 }
  })
  for (let i = 0; i < 7; i++) t.equal((await mesh.request(`/items/${i}`)).status, 200)
  for (let i = 0; i < 3; i++) t.equal((await mesh.request('/items', { method: 'POST', body: 'x' })).status, 403)
  const refused = await tlsAttempt(clientTls(mesh, null))
  t.equal(refused.response, '', 'a client without a certificate is refused')
  await waitFor(() => mesh.rawAuditLines.some(l => l.includes('"msg":"checkpoint"')), 5000, 'a checkpoint line')

  const scrape = async (): Promise<Map<string, Family>> => {
    const res = await adminGet(mesh, '/metrics')
    t.equal(res.status, 200)
    t.match(res.contentType, /^text\/plain; version=0\.0\.4/, 'the text format content type')
    return parsePrometheusText(res.body)
  }
  // Handshake failures and checkpoints are counted asynchronously: scrape until both show.
  let families = await scrape()
  await waitFor(async () => {
    families = await scrape()
    return (families.get('gatehouse_tls_handshake_failures_total')?.samples.length ?? 0) > 0 &&
      (families.get('gatehouse_decision_log_lines_total')?.samples.some(s => s.labels.kind === 'checkpoint') ?? false)
  }, 5000, 'handshake failure and checkpoint counters')
  t.pass('/metrics parses as Prometheus text format')

  const requests = must(families, 'gatehouse_requests_total')
  t.equal(requests.type, 'counter')
  t.ok(requests.help !== undefined && requests.help.length > 0, 'with HELP')
  t.ok(requests.samples.every(s => Object.keys(s.labels).sort().join() === 'caller,decision,mode,rule'), 'labels: decision, rule, mode, caller')
  t.same(requests.samples.map(s => [s.labels.decision, s.labels.rule, s.labels.caller, s.value]).sort(), [
    ['allow', 'reads', CLIENT, 7],
    ['deny', '', CLIENT, 3]
  ], 'counts by decision, rule (empty for the default deny) and caller')

  const lines = must(families, 'gatehouse_decision_log_lines_total')
  t.equal(lines.type, 'counter')
  const byKind = Object.fromEntries(lines.samples.map(s => [s.labels.kind, s.value]))
  t.equal(byKind.decision, 10, 'decision lines: one per request')
  t.equal(byKind.genesis, 1, 'one genesis line')
  t.ok((byKind.checkpoint ?? 0) >= 1, `checkpoint lines (${String(byKind.checkpoint)})`)
  t.equal(mesh.rawAuditLines.filter(l => l.includes('"msg":"checkpoint"')).length, byKind.checkpoint, 'as many as the log holds')

  const expiry = must(families, 'gatehouse_cert_expiry_timestamp_seconds')
  t.equal(expiry.type, 'gauge')
  const [leafDer, issuerDer] = pemToDers(mesh.server.chainPem)
  const cert = (der: Buffer | undefined): X509Certificate => new X509Certificate(der!)
  const root = new X509Certificate(mesh.pki.ca.bundlePem)
  for (const [kind, c] of [['leaf', cert(leafDer)], ['issuer', cert(issuerDer)], ['root', root]] as const) {
    const s = expiry.samples.find(x => x.labels.cert === kind)
    t.ok(s, `expiry of the ${kind} certificate`)
    t.equal(s?.labels.serial, c.serialNumber.toLowerCase(), `${kind}: labelled with its serial`)
    t.equal(s?.value, c.validToDate.getTime() / 1000, `${kind}: its notAfter in seconds`)
  }

  const duration = must(families, 'gatehouse_request_duration_seconds')
  t.equal(duration.type, 'histogram', 'duration is a histogram (buckets checked cumulative by the parser)')
  const count = (decision: string): number | undefined => duration.samples.find(s => s.name === 'gatehouse_request_duration_seconds_count' && s.labels.decision === decision)?.value
  t.equal(count('allow'), 7)
  t.equal(count('deny'), 3)
  const allowBuckets = duration.samples.filter(s => s.name.endsWith('_bucket') && s.labels.decision === 'allow')
  t.ok(allowBuckets.length >= 10, `${allowBuckets.length} buckets`)
  t.ok(allowBuckets.every((b, i) => i === 0 || b.value >= allowBuckets[i - 1]!.value), 'cumulative')
  t.equal(allowBuckets.at(-1)?.labels.le, '+Inf')

  const handshakes = must(families, 'gatehouse_tls_handshake_failures_total')
  t.ok(handshakes.samples.every(s => typeof s.labels.reason === 'string'), 'handshake failures by reason')
  t.ok(handshakes.samples.some(s => s.labels.reason === 'no-client-certificate' && s.value >= 1), 'the certificate-less client counted')
  t.match(must(families, 'gatehouse_policy_reloads_total').samples, [{ labels: { result: 'success' }, value: 1 }], 'policy reloads by result')
})

t.test('caller cardinality is capped: callers past the limit are labelled "other"', async t => {
  const m = createProxyMetrics({ maxCallers: 2 })
  const a = 'spiffe://example.org/ns/a/sa/a'
  const b = 'spiffe://example.org/ns/b/sa/b'
  const labels = [a, b, 'spiffe://example.org/ns/c/sa/c', a, 'spiffe://example.org/ns/d/sa/d', b].map(c => m.callerLabel(c))
  t.same(labels, [a, b, 'other', a, 'other', b], 'the first two distinct callers keep their ID; later ones are "other"; known ones stay')
  for (const caller of labels) m.requests.inc({ decision: 'allow', rule: 'r', mode: 'enforce', caller })
  const weird = m.callerLabel('never seen')
  t.equal(weird, 'other')
  const families = parsePrometheusText(await m.registry.metrics())
  const samples = must(families, 'gatehouse_requests_total').samples
  t.same(Object.fromEntries(samples.map(s => [s.labels.caller, s.value])), { [a]: 2, [b]: 2, other: 2 }, 'three series at most: two callers and "other"')

  // The sidecar counts through countRequest (label children made once): the same cap, the same series.
  const m3 = createProxyMetrics({ maxCallers: 2 })
  for (const caller of [a, b, 'spiffe://example.org/ns/c/sa/c', a, 'spiffe://example.org/ns/d/sa/d', b]) m3.countRequest('allow', 'r', 'enforce', caller)
  const counted = must(parsePrometheusText(await m3.registry.metrics()), 'gatehouse_requests_total').samples
  t.same(Object.fromEntries(counted.map(s => [s.labels.caller, s.value])), { [a]: 2, [b]: 2, other: 2 }, 'countRequest: two callers and "other"')

  // Label values are escaped in the exposition and read back unchanged.
  const m2 = createProxyMetrics({ maxCallers: 5 })
  const odd = 'we"ird\\caller\nid'
  m2.requests.inc({ decision: 'deny', rule: 'a "rule"', mode: 'enforce', caller: m2.callerLabel(odd) })
  const text = await m2.registry.metrics()
  t.match(text, 'caller="we\\"ird\\\\caller\\nid"', 'quote, backslash and newline escaped')
  t.same(must(parsePrometheusText(text), 'gatehouse_requests_total').samples[0]?.labels, { decision: 'deny', rule: 'a "rule"', mode: 'enforce', caller: odd }, 'and parsed back')
})
