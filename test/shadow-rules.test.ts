import t from 'tap'
import { startMesh } from './helpers/mesh.ts'
import { gatehouseAsync } from './helpers/audit-log.ts'
import { waitFor } from './helpers/wait.ts'

// Shadow rules (`mode: audit` on a rule) are evaluated but not enforced: requests are decided by the
// enforced rules alone, and each decision line also carries what the policy would have decided with
// the shadow rules enforced (shadowDecision, shadowRule). A policy without shadow rules adds nothing.

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'
const NEWCOMER = 'spiffe://example.org/ns/reports/sa/new'

const SHADOW_POLICY = `version: 1
rules:
  - name: client-all
    from: ["${CLIENT}"]
  - name: newcomer-reports
    mode: audit
    from: ["${NEWCOMER}"]
    methods: [GET]
    paths: ["/reports/**"]
deny:
  - name: no-reports-yet
    mode: audit
    from: ["${CLIENT}"]
    paths: ["/reports/**"]
`

t.test('shadow rules are logged beside the enforced decision, never enforced', async t => {
  const mesh = await startMesh(t, { policy: SHADOW_POLICY })
  const newcomer = mesh.pki.issue('/ns/reports/sa/new', 'newcomer')

  const shadowDenied = await mesh.request('/reports/2024', { headers: { 'x-request-id': 'shadow-deny' } })
  t.equal(shadowDenied.status, 200, 'a request the shadow deny rule matches still succeeds')
  const plain = await mesh.request('/orders/1', { headers: { 'x-request-id': 'no-shadow-match' } })
  t.equal(plain.status, 200)
  const wouldBeAllowed = await mesh.request('/reports/2024', { headers: { 'x-request-id': 'shadow-allow' }, svid: newcomer })
  t.equal(wouldBeAllowed.status, 403, 'a request only a shadow allow rule matches is still denied')
  t.same(mesh.app.seen.map(s => s.url), ['/reports/2024', '/orders/1'], 'the app saw exactly the enforced allows')

  await waitFor(() => mesh.decisions.length >= 3, 5000, 'three decision lines')
  const byId = (id: string): Record<string, any> | undefined => mesh.decisions.find(d => d.requestId === id)
  t.match(byId('shadow-deny'), { decision: 'allow', rule: 'client-all', status: 200, shadowDecision: 'deny', shadowRule: 'no-reports-yet' },
    'enforced allow, shadow deny: decision allow, shadowDecision deny, shadowRule named')
  t.match(byId('no-shadow-match'), { decision: 'allow', rule: 'client-all', shadowDecision: 'allow', shadowRule: 'client-all' },
    'where the shadow rules change nothing, shadowDecision equals the decision')
  t.match(byId('shadow-allow'), { decision: 'deny', rule: null, reason: 'no-matching-rule', status: 403, caller: NEWCOMER, shadowDecision: 'allow', shadowRule: 'newcomer-reports' },
    'enforced default deny, shadow allow: a new rule can be watched before it is enforced')
  t.ok(mesh.decisions.every(d => d.mode === 'enforce' && d.enforced === true), 'the policy is enforced (mode enforce), not in audit mode')

  // policy explain marks shadow rules as such.
  const explained = await gatehouseAsync(['policy', 'explain', mesh.policyFile, '--caller', CLIENT, '--method', 'GET', '--path', '/reports/2024'])
  t.equal(explained.status, 0)
  t.match(explained.stdout, /^ALLOW by rule "client-all"/, 'explain gives the enforced decision')
  t.match(explained.stdout, /\n {2}deny no-reports-yet \(shadow\): matches\n/, 'and marks the matching shadow rule')
})

t.test('a policy without shadow rules adds no shadow fields', async t => {
  const mesh = await startMesh(t, { policy: `version: 1\nrules:\n  - name: client-all\n    from: ["${CLIENT}"]\n    paths: ["/reports/**"]\n` })
  t.equal((await mesh.request('/reports/2024')).status, 200)
  t.equal((await mesh.request('/elsewhere')).status, 403)
  await waitFor(() => mesh.decisions.length >= 2, 5000, 'two decision lines')
  for (const d of mesh.decisions) {
    t.notOk('shadowDecision' in d, `${String(d.path)}: no shadowDecision field`)
    t.notOk('shadowRule' in d, `${String(d.path)}: no shadowRule field`)
  }
  t.notOk(mesh.rawAuditLines.some(l => l.includes('shadow')), 'nothing about shadows anywhere in the log')
})
