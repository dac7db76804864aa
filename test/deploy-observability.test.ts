import t from 'tap'
import { writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor'
import { Deployment } from 'kubernetes-models/apps/v1/Deployment'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap'
import { loadConfig } from '../src/config.ts'
import { caSchemas } from '../src/cli/ca.ts'
import { injectSchemas } from '../src/cli/inject.ts'
import { proxyContainer } from '../src/inject/proxy-container.ts'
import { DEFAULT_INJECTOR_CONFIG } from '../src/inject/injector-config.ts'
import { loadCa } from '../src/ca/ca-directory.ts'
import { mintJoinToken } from '../src/ca/join-token.ts'
import { Issuer } from '../src/ca/issuer.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { generateKey } from '../src/x509/keys.ts'
import { createCsr } from '../src/x509/csr.ts'
import { cliPath } from './helpers/run-cli.ts'
import { startProcess } from './helpers/process.ts'
import { startMesh, Pki } from './helpers/mesh.ts'
import { scrapeMetrics } from './helpers/inbound-probe.ts'
import { parsePrometheusText, type Family } from './helpers/prom-text.ts'
import { tempCa, postSvid } from './helpers/ca-fixture.ts'
import { tempDir } from './helpers/files.ts'
import { deployDir, skipWithoutKubectl, NS } from './helpers/k8s-pod.ts'
import { renderOverlay } from './helpers/kustomize.ts'

// deploy/components/monitoring and deploy/grafana: the component renders onto deploy/, its objects
// validate against their schemas (prometheus-operator's for the PodMonitors), the flags it adds are
// real, its PodMonitors select the pods and ports that serve /metrics; and every metric a dashboard
// query names is served by a live sidecar, CA (`gatehouse ca serve --metrics-listen`) or injector
// (`gatehouse inject serve --metrics-listen`), scraped over HTTP.

/* eslint-disable @typescript-eslint/no-explicit-any */
type K = Record<string, any>

const dashboardFile = join(deployDir, 'grafana/gatehouse-dashboard.json')

const dashboard = JSON.parse(readFileSync(dashboardFile, 'utf8')) as K

/** Every PromQL expression of the dashboard, with the panel it belongs to. */
function expressions (d: K): Array<{ panel: string, expr: string }> {
  const out: Array<{ panel: string, expr: string }> = []
  const walk = (panels: K[]): void => {
    for (const p of panels) {
      for (const target of p.targets ?? []) if (typeof target.expr === 'string') out.push({ panel: p.title, expr: target.expr })
      walk(p.panels ?? [])
    }
  }
  walk(d.panels ?? [])
  for (const v of d.templating?.list ?? []) if (v.type === 'query') out.push({ panel: `variable ${String(v.name)}`, expr: String(v.query?.query ?? v.query) })
  return out
}

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'atan2', 'inf', 'nan'])

/** The metric names a PromQL expression selects: identifiers that are not functions, keywords, labels or strings. */
function metricNames (expr: string): string[] {
  const e = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // string literals
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\[[^\]]*\]/g, '') // ranges
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '') // label lists
    .replace(/\$\w+/g, '') // Grafana variables
  const names: string[] = []
  for (const m of e.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    if (/^\s*\(/.test(e.slice(m.index + m[0].length))) continue // a function call
    if (KEYWORDS.has(m[0].toLowerCase())) continue
    if (/\d$/.test(e.slice(0, m.index)) && /^e\d*$/i.test(m[0])) continue // 1e3
    names.push(m[0])
  }
  return names
}

/** Served by one of the scrapes: the family itself, or a histogram's _bucket/_sum/_count. */
function served (name: string, scrapes: Array<Map<string, Family>>): boolean {
  for (const families of scrapes) {
    if (families.has(name)) return true
    const m = /^(.*)_(bucket|sum|count)$/.exec(name)
    if (m !== null && families.get(m[1]!)?.type === 'histogram') return true
  }
  return false
}

t.test('the PromQL reader finds metric names and nothing else', async t => {
  t.same(metricNames('histogram_quantile(0.99, sum by (le, decision) (rate(gatehouse_request_duration_seconds_bucket{decision="allow"}[$__rate_interval])))'), ['gatehouse_request_duration_seconds_bucket'])
  t.same(metricNames('count(gatehouse_decision_log_writable == 0) or vector(0)'), ['gatehouse_decision_log_writable'])
  t.same(metricNames('min by (cert) (a_metric{cert="by (x)"}) - time() < 30 * 86400 and on (pod) b_metric'), ['a_metric', 'b_metric'])
})

t.test('dashboard: every query names metrics that live sidecars, CAs and injectors serve', async t => {
  // A sidecar with traffic (test/helpers/mesh.ts).
  const mesh = await startMesh(t)
  t.equal((await mesh.request('/hello')).status, 200)
  const sidecar = parsePrometheusText(await scrapeMetrics(mesh))

  // `gatehouse ca serve --metrics-listen`, one SVID issued and one refused.
  const { dir } = tempCa(t)
  const ca = await startProcess(t, process.execPath, [cliPath, 'ca', 'serve', '--dir', dir, '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0'], /"event":"ca\.metrics_listening","host":"127\.0\.0\.1","port":(\d+)/)
  const caPort = Number(/"event":"ca\.listening","host":"127\.0\.0\.1","port":(\d+)/.exec(ca.output())![1])
  const material = loadCa(dir)
  const caAgent = new Agent({ connect: { ca: material.bundlePem } })
  t.teardown(async () => { await caAgent.close() })
  const api = { url: `https://127.0.0.1:${caPort}`, agent: caAgent }
  const token = await mintJoinToken({ tokenKey: material.tokenKey, trustDomain: material.trustDomain, id: SpiffeId.parse('spiffe://example.org/vm/one'), ttlMs: 60_000 })
  t.equal((await postSvid(api, { token, csr: createCsr(generateKey('ec-p256').privateKey) })).status, 200, 'an SVID issued')
  t.equal((await postSvid(api, { token: 'not-a-token', csr: createCsr(generateKey('ec-p256').privateKey) })).status, 401, 'one refused')
  const caText = await scrape(Number(ca.match[1]))
  const caFamilies = parsePrometheusText(caText)
  t.match(caText, /^gatehouse_ca_svid_requests_total\{result="issued",code="",attestation="join-token"\} 1$/m, 'the issuance is counted')
  t.match(caText, /^gatehouse_ca_svid_requests_total\{result="refused",code="GH_TOKEN_INVALID",attestation="none"\} 1$/m, 'the refusal is counted, with its code')
  t.match(caText, new RegExp(`^gatehouse_ca_cert_expiry_timestamp_seconds\\{cert="issuer",serial="${material.issuer.serialHex}"\\} ${Math.floor(material.issuer.notAfter.getTime() / 1000)}$`, 'm'), 'the issuer\'s expiry')
  t.equal((await get(`https://127.0.0.1:${caPort}/metrics`, caAgent)).status, 404, 'not on the mTLS API port')

  // `gatehouse inject serve --metrics-listen`, one review answered.
  const injDir = tempDir(t, 'gh-obs-inject-')
  const pki = new Pki(injDir)
  const key = generateKey('ec-p256')
  const svid = new Issuer(pki.ca).issue({ id: SpiffeId.parse('spiffe://example.org/gatehouse/injector'), publicKey: key.publicKey, ips: ['127.0.0.1'] })
  writeFileSync(join(injDir, 'tls.crt'), svid.chainPem)
  writeFileSync(join(injDir, 'tls.key'), key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600 })
  const inj = await startProcess(t, process.execPath, [cliPath, 'inject', 'serve', '--listen', '127.0.0.1:0', '--cert', join(injDir, 'tls.crt'), '--key', join(injDir, 'tls.key'), '--metrics-listen', '127.0.0.1:0'], /"event":"inject\.metrics_listening","host":"127\.0\.0\.1","port":(\d+)/)
  const injPort = Number(/"event":"inject\.listening","host":"127\.0\.0\.1","port":(\d+)/.exec(inj.output())![1])
  const injAgent = new Agent({ connect: { ca: pki.ca.bundlePem } })
  t.teardown(async () => { await injAgent.close() })
  const review = { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'obs-1', kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, namespace: 'shop', operation: 'CREATE', object: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', annotations: { 'gatehouse.io/inject': 'enabled' } }, spec: { containers: [{ name: 'web', image: 'web:1' }] } } } }
  const answered = await request(`https://127.0.0.1:${injPort}/mutate`, { method: 'POST', dispatcher: injAgent, headers: { 'content-type': 'application/json' }, body: JSON.stringify(review) })
  t.equal(answered.statusCode, 200)
  await answered.body.text()
  const injText = await scrape(Number(inj.match[1]))
  t.match(injText, /^gatehouse_injector_admissions_total\{outcome="patched",reason="injected"\} 1$/m, 'the admission is counted')
  const injector = parsePrometheusText(injText)

  const scrapes = [sidecar, caFamilies, injector]
  const exprs = expressions(dashboard)
  t.ok(exprs.length >= 15, `${exprs.length} queries in the dashboard`)
  const used = new Set<string>()
  for (const { panel, expr } of exprs) {
    const names = metricNames(expr)
    t.ok(names.length > 0, `${panel}: ${expr} names a metric`)
    for (const name of names) {
      used.add(name.replace(/_(bucket|sum|count)$/, ''))
      t.ok(served(name, scrapes), `${panel}: ${name} is served`)
    }
  }
  // What the dashboard is for (issue 20): each of these has a panel.
  for (const name of ['gatehouse_requests_total', 'gatehouse_decision_log_writable', 'gatehouse_cert_expiry_timestamp_seconds', 'gatehouse_ca_svid_requests_total', 'gatehouse_ca_cert_expiry_timestamp_seconds', 'gatehouse_ca_request_duration_seconds', 'gatehouse_injector_admissions_total', 'gatehouse_injector_admission_duration_seconds', 'gatehouse_ca_quarantine_entries', 'gatehouse_quarantine_suspicions_total']) {
    t.ok(used.has(name), `a panel shows ${name}`)
  }
  t.equal(new Set(dashboard.panels.map((p: K) => p.id)).size, dashboard.panels.length, 'panel ids are unique')
  for (const p of dashboard.panels.filter((p: K) => p.type !== 'row')) t.equal(p.datasource?.uid, '${datasource}', `${String(p.title)}: on the dashboard's datasource variable`)
})

async function scrape (port: number): Promise<string> {
  const res = await request(`http://127.0.0.1:${port}/metrics`)
  if (res.statusCode !== 200) throw new Error(`/metrics answered ${res.statusCode}`)
  if (!String(res.headers['content-type']).startsWith('text/plain')) throw new Error(`content-type ${String(res.headers['content-type'])}`)
  return await res.body.text()
}

async function get (url: string, dispatcher: Agent): Promise<{ status: number }> {
  const res = await request(url, { dispatcher })
  await res.body.text()
  return { status: res.statusCode }
}

t.test('deploy/components/monitoring on deploy/: metrics ports, PodMonitors, NetworkPolicy, dashboard', { skip: skipWithoutKubectl }, async t => {
  const docs = renderOverlay(t, { components: ['monitoring'] })
  const find = (kind: string, name: string): K => docs.find(d => d.kind === kind && d.metadata?.name === name)!

  // Schemas: prometheus-operator's for the PodMonitors, Kubernetes' for the rest of what it adds or changes.
  const monitors = docs.filter(d => d.kind === 'PodMonitor')
  t.same(monitors.map(m => m.metadata.name).sort(), ['gatehouse-ca', 'gatehouse-injector', 'gatehouse-sidecars'])
  for (const m of monitors) t.doesNotThrow(() => { new PodMonitor(m as any).validate() }, `PodMonitor ${String(m.metadata.name)} validates`)
  t.throws(() => { new PodMonitor({ metadata: { name: 'x' }, spec: { podMetricsEndpoints: [{ port: 7 }] } } as any).validate() }, 'and the validator does refuse a bad one')
  for (const name of ['gatehouse-ca', 'gatehouse-injector']) t.doesNotThrow(() => { new Deployment(find('Deployment', name) as any).validate() }, `Deployment ${name} validates`)
  t.doesNotThrow(() => { new NetworkPolicy(find('NetworkPolicy', 'gatehouse-metrics') as any).validate() }, 'NetworkPolicy validates')
  t.doesNotThrow(() => { new ConfigMap(find('ConfigMap', 'gatehouse-grafana-dashboard') as any).validate() }, 'ConfigMap validates')
  for (const d of [...monitors, find('NetworkPolicy', 'gatehouse-metrics'), find('ConfigMap', 'gatehouse-grafana-dashboard')]) t.equal(d.metadata.namespace, NS, `${String(d.kind)}/${String(d.metadata.name)} in ${NS}`)

  // The flags the component adds are real, and each PodMonitor scrapes a port that serves /metrics.
  const roles = [
    { name: 'gatehouse-ca', command: 'ca serve', schema: caSchemas['ca serve'], port: 15444 },
    { name: 'gatehouse-injector', command: 'inject serve', schema: injectSchemas['inject serve'], port: 15018 }
  ] as const
  for (const role of roles) {
    const dep = find('Deployment', role.name)
    const c = dep.spec.template.spec.containers[0]
    const env = Object.fromEntries((c.env ?? []).filter((e: K) => String(e.name).startsWith('GATEHOUSE_')).map((e: K) => [e.name, e.value]))
    const cfg = loadConfig(role.command, role.schema, { argv: c.args.slice(2), env }) as K
    t.same(cfg.metricsListen, { host: '0.0.0.0', port: role.port }, `${role.name}: --metrics-listen 0.0.0.0:${role.port}`)
    t.equal(c.ports.find((p: K) => p.name === 'metrics')?.containerPort, role.port, `${role.name}: container port metrics`)
    const monitor = monitors.find(m => m.metadata.name === role.name)!
    t.same(Object.entries(monitor.spec.selector.matchLabels).filter(([k, v]) => dep.spec.template.metadata.labels[k] !== v), [], `${role.name}: the PodMonitor selects its pods`)
    t.same(monitor.spec.podMetricsEndpoints.map((e: K) => [e.port, e.path]), [['metrics', '/metrics']])
    if (role.name === 'gatehouse-injector') t.equal(cfg.proxyExposeMetrics, true, 'the injector gives sidecars --admin-expose-metrics')
  }
  // Injected pods: the proxy's admin port, by name, and nothing else selects them.
  const sidecars = monitors.find(m => m.metadata.name === 'gatehouse-sidecars')!
  t.same(sidecars.spec.namespaceSelector, { any: true }, 'sidecars in every namespace')
  const proxy = proxyContainer({ ...DEFAULT_INJECTOR_CONFIG, exposeMetrics: true }, { upstreamPort: 8080, policyConfigMap: 'p', routesConfigMap: 'r', resources: DEFAULT_INJECTOR_CONFIG.resources })
  const adminPort = (proxy.ports as K[]).find(p => p.name === sidecars.spec.podMetricsEndpoints[0].port)
  t.equal(adminPort?.containerPort, DEFAULT_INJECTOR_CONFIG.adminPort, 'the PodMonitor port is the injected proxy\'s admin port')
  t.ok((proxy.args as string[]).includes('--admin-expose-metrics'), 'where /metrics answers off loopback when the injector says so')

  // Prometheus may reach the metrics ports through gatehouse-system's default deny, and only those.
  const pol = find('NetworkPolicy', 'gatehouse-metrics')
  t.same(pol.spec.ingress.flatMap((i: K) => i.ports), [{ protocol: 'TCP', port: 'metrics' }], 'the metrics port only')
  t.same(pol.spec.podSelector.matchExpressions[0].values.sort(), ['gatehouse-ca', 'gatehouse-injector'])

  // The dashboard ConfigMap carries deploy/grafana/gatehouse-dashboard.json as it is.
  const cm = find('ConfigMap', 'gatehouse-grafana-dashboard')
  t.equal(cm.metadata.labels.grafana_dashboard, '1', 'labelled for Grafana\'s dashboard sidecar')
  t.same(JSON.parse(cm.data['gatehouse-dashboard.json']), dashboard)
})
