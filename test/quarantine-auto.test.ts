import t from 'tap'
import { Agent, ProxyAgent, request } from 'undici'
import { startTestCa, DENY_ALL_POLICY, OK_APP, type TestCa } from './helpers/ca-mesh.ts'
import { readQuarantine } from '../src/ca/quarantine-book.ts'
import { startWorkload, type Tap, type Workload } from './helpers/mesh.ts'
import { sleep, waitFor } from './helpers/wait.ts'

// Quarantine automatically (issue 18): the callee's sidecar sees a caller scanning denied paths (or
// touching a canary path), reports it to the CA with its decision lines as evidence, and the CA
// decides: enforce quarantines it, audit only logs "would quarantine". An honest caller at the same
// rate is never reported; reports without an SVID, about the reporter, or about an allow-listed
// identity are refused.

const TD = 'example.org'
const SCANNER = `spiffe://${TD}/ns/shop/sa/scanner`
const HONEST = `spiffe://${TD}/ns/shop/sa/honest`
const API = `spiffe://${TD}/ns/api/sa/server`

const apiPolicy = `version: 1
canary: ["/.env", "/admin/backup/**"]
rules:
  - name: orders-read
    from: ["${SCANNER}", "${HONEST}"]
    methods: [GET]
    paths: ["/v1/orders/*"]
`

async function meshFor (t: Tap, ca: TestCa): Promise<{ api: Workload, call: (who: string, path: string) => Promise<number> }> {
  const api = await startWorkload(t, { ca, name: 'api', id: API, policy: apiPolicy, app: OK_APP })
  const routes = `version: 1\nroutes:\n  - host: api.internal\n    address: 127.0.0.1:${api.sidecar.inbound.port}\n    id: ${API}\n`
  const callers = new Map<string, ProxyAgent>()
  for (const id of [SCANNER, HONEST]) {
    const s = await startWorkload(t, { ca, name: id.split('/').pop()!, id, policy: DENY_ALL_POLICY, routes })
    const agent = new ProxyAgent({ uri: `http://127.0.0.1:${s.sidecar.outbound!.port}`, proxyTunnel: false })
    t.teardown(async () => { await agent.destroy() })
    callers.set(id, agent)
  }
  return {
    api,
    call: async (who, path) => { const r = await request(`http://api.internal${path}`, { dispatcher: callers.get(who)! }); await r.body.text(); return r.statusCode }
  }
}

t.test('enforce: a scanner is quarantined, an honest caller at the same rate is not', async t => {
  const ca = await startTestCa(t, { leafTtlMs: 600_000, autoQuarantine: { mode: 'enforce', ttlMs: 3_600_000 } })
  const { api, call } = await meshFor(t, ca)
  for (let i = 0; i < 30; i++) {
    await Promise.all([call(SCANNER, `/probe/${i}/.git/config`), call(HONEST, `/v1/orders/${i}`)])
    await sleep(20) // spaces the rounds of calls
  }
  await waitFor(() => readQuarantine(ca.dir).some(e => e.id === SCANNER), 10_000, 'the scanner in the quarantine list')
  const entry = readQuarantine(ca.dir).find(e => e.id === SCANNER)!
  t.match(entry, { by: 'auto', reason: new RegExp(`^auto: scan \\(\\d+ denials over \\d+ distinct paths within 10 s\\) reported by ${API}$`) })
  t.ok(entry.expires !== undefined && Date.parse(entry.expires) - Date.now() > 3_500_000, 'with the TTL')
  t.match(api.events('quarantine.reported')[0], { subject: SCANNER, detector: 'scan', outcome: 'quarantined' })
  const report = ca.logs.find(l => l.event === 'report.received')!
  t.match(report, { reporter: API, subject: SCANNER, detector: 'scan', outcome: 'quarantined' })
  t.ok(report.evidence >= 20, `the report carried ${report.evidence as number} decision lines as evidence`)
  await waitFor(async () => await call(SCANNER, '/v1/orders/1') === 403, 10_000, 'the scanner\'s own sidecar to refuse to call out')
  // Its stolen key used directly, without its sidecar: the callee denies it by rule quarantine.
  const stolen = ca.issue(SCANNER, 600_000)
  const direct = new Agent({ connect: { cert: stolen.chainPem, key: stolen.keyPem, rejectUnauthorized: false } })
  t.teardown(async () => { await direct.close() })
  await waitFor(async () => { const r = await request(`https://127.0.0.1:${api.sidecar.inbound.port}/v1/orders/1`, { dispatcher: direct }); await r.body.text(); return r.statusCode === 403 }, 10_000, 'the callee to deny the scanner')
  t.match(api.decisions.findLast(d => d.caller === SCANNER), { decision: 'deny', rule: 'quarantine', reason: 'quarantined', quarantineReason: /^auto: scan/ })
  t.equal(await call(HONEST, '/v1/orders/1'), 200, 'the honest caller is still served')
  t.notOk(readQuarantine(ca.dir).some(e => e.id === HONEST), 'and was never quarantined')
})

t.test('audit (the default): logged as "would quarantine", nothing changes; a canary path trips at once', async t => {
  const ca = await startTestCa(t, { leafTtlMs: 600_000 })
  const { api, call } = await meshFor(t, ca)
  t.equal(await call(SCANNER, '/.env'), 403, 'a canary path is denied')
  t.match(api.decisions.find(d => d.path === '/.env'), { decision: 'deny', rule: 'canary' })
  await waitFor(() => ca.logs.some(l => l.event === 'quarantine.would_quarantine'), 10_000, 'the CA\'s audit line')
  t.match(ca.logs.find(l => l.event === 'quarantine.would_quarantine'), { spiffeId: SCANNER, reason: /^auto: canary \(requested canary path \/\.env\)/ })
  t.same(readQuarantine(ca.dir), [], 'the list is unchanged')
  t.equal(await call(SCANNER, '/v1/orders/2'), 200, 'the caller is still served')
})

t.test('the CA refuses reports without an SVID, about the reporter itself, or about an allow-listed identity', async t => {
  const ca = await startTestCa(t, { leafTtlMs: 600_000, autoQuarantine: { mode: 'enforce' } })
  const bundle = ca.material().bundlePem
  const report = async (agent: Agent, subject: string): Promise<{ status: number, body: any }> => {
    const r = await request(`${ca.url}/v1/reports`, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ subject, detector: 'scan', detail: 'test', evidence: [] }) })
    return { status: r.statusCode, body: await r.body.json() }
  }
  const anonymous = new Agent({ connect: { ca: bundle } })
  const svid = ca.issue(API, 600_000)
  const reporter = new Agent({ connect: { ca: bundle, cert: svid.chainPem, key: svid.keyPem } })
  t.teardown(async () => { await anonymous.close(); await reporter.close() })
  t.match(await report(anonymous, SCANNER), { status: 401, body: { error: 'GH_TOKEN_INVALID' } }, 'no SVID: refused')
  t.match(await report(reporter, API), { status: 403, body: { error: 'GH_REPORT_REFUSED', message: /cannot report its own identity/ } })
  t.match(await report(reporter, `spiffe://${TD}/gatehouse/injector`), { status: 403, body: { error: 'GH_REPORT_REFUSED', message: /--never-quarantine/ } })
  t.match(await report(reporter, 'spiffe://other.org/ns/x/sa/y'), { status: 403, body: { message: /not in trust domain/ } })
  t.equal(ca.logs.filter(l => l.event === 'report.refused').length, 4, 'every refusal is logged with its reason')
  t.same(readQuarantine(ca.dir), [])
  t.match(await report(reporter, SCANNER), { status: 202, body: { outcome: 'quarantined' } }, 'a proper report is acted on')
})
