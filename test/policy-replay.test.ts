import t from 'tap'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { Pki } from './helpers/mesh.ts'
import { gatehouseAsync } from './helpers/audit-log.ts'
import { writeMeshLogs, tamperOneLine, PAYMENTS, ORDERS, BILLING, CRON, BACKUP, EVIL, TD } from './helpers/decision-logs.ts'
import { parsePolicy } from '../src/policy/load.ts'
import { shadowedRules } from '../src/audit/query.ts'
import type { ReplayReport } from '../src/policy/replay.ts'
import { tempDir } from './helpers/files.ts'

// `gatehouse policy replay`, `policy diff --replay` and `audit query --unused-rules` on signed logs
// of a small mesh: a tightened policy flips exactly the requests it should (exit 3), a widened one
// the denials it lets through, rules no request matched and rules a deny always decides first are
// named, and a tampered log is refused.

const FULL = `version: 1
rules:
  - name: orders-get
    from: ["${ORDERS}"]
    methods: [GET]
    paths: ["/v1/charges/*", "/v1/charges/*/refunds"]
  - name: orders-post
    from: ["${ORDERS}"]
    methods: [POST]
    paths: ["/v1/charges"]
  - name: ledger
    from: ["${BILLING}"]
    methods: [POST]
    paths: ["/billing.v1.Ledger/Get", "/billing.v1.Ledger/Record"]
  - name: reports
    from: ["${CRON}"]
    methods: [GET]
    paths: ["/v1/reports/*"]
  - name: backup
    from: ["${BACKUP}"]
    ports: [5432]
`
// The ledger loses Get (2 requests) and the cron job its reports (3, served in audit mode).
const TIGHT = FULL.replace(', "/billing.v1.Ledger/Record"]', ']').replace('"/billing.v1.Ledger/Get"', '"/billing.v1.Ledger/Record"').replace(/ {2}- name: reports\n(.*\n){3}/, '')
// Unused and shadowed rules: an allow under a deny, a deny under a deny, a rule for a caller never seen.
const LINTED = `${FULL}  - name: admin-read
    from: ["${BACKUP}"]
    paths: ["/admin/users"]
  - name: orders-get-again
    from: ["${ORDERS}"]
    methods: [GET]
    paths: ["/v1/charges/*"]
  - name: legacy
    from: ["${TD}/ns/legacy/sa/old"]
deny:
  - name: no-admin
    from: ["${TD}/**"]
    paths: ["/admin/**"]
  - name: no-admin-users
    from: ["${TD}/ns/evil/*/*"]
    methods: [GET]
    paths: ["/admin/users"]
`

t.test('replay, diff and unused rules on signed multi-sidecar logs', async t => {
  const dir = tempDir(t, 'gh-replay-')
  const pki = new Pki(dir)
  const files = await writeMeshLogs(dir, pki)
  const file = (name: string, text: string): string => { const f = join(dir, name); writeFileSync(f, text); return f }
  const [full, tight, linted] = [file('full.yaml', FULL), file('tight.yaml', TIGHT), file('linted.yaml', LINTED)]
  parsePolicy(TIGHT)
  const replay = async (policy: string, ...more: string[]): Promise<{ status: number | null, r: ReplayReport }> => {
    const cli = await gatehouseAsync(['policy', 'replay', policy, ...files, '--callee', PAYMENTS, '--trust-bundle', pki.bundleFile, '-o', 'json', ...more])
    return { status: cli.status, r: JSON.parse(cli.stdout) as ReplayReport }
  }

  const same = await replay(full)
  t.equal(same.status, 0)
  t.same([same.r.decisions, same.r.allowToDeny, same.r.denyToAllow], [25, 0, 0], 'the policy that served the traffic: no flips')

  const tightened = await replay(tight)
  t.equal(tightened.status, 3, 'exit 3: something served would be denied')
  t.equal(tightened.r.allowToDeny, 5)
  t.equal(tightened.r.denyToAllow, 0)
  t.same(tightened.r.flips.map(g => [g.direction, g.caller, g.was.rule, g.now.rule, g.count]).sort(), [
    ['allow→deny', CRON, null, null, 3],
    ['allow→deny', BILLING, 'r', null, 2]
  ], 'exactly the Ledger/Get calls and the audit-mode reports, grouped by caller and rule')
  t.ok(tightened.r.flips.flatMap(g => g.examples).some(e => e.request === 'POST /billing.v1.Ledger/Get' && e.callee === PAYMENTS), 'with examples')

  const opened = await replay(file('open.yaml', `${FULL}  - name: everyone\n    from: ["${TD}/**"]\n`))
  t.equal(opened.status, 0, 'deny→allow only: exit 0')
  t.same(opened.r.flips.map(g => [g.direction, g.caller, g.was.rule, g.now.rule, g.count]), [['deny→allow', EVIL, 'no-admin', 'everyone', 2]])

  const text = await gatehouseAsync(['policy', 'replay', tight, ...files, '--callee', PAYMENTS, '--trust-bundle', pki.bundleFile])
  t.match(text.stdout, /25 decision\(s\) replayed, 5 allow→deny, 0 deny→allow, 20 unchanged\n {2}allow→deny 3x spiffe:\/\/example.org\/ns\/billing\/sa\/cron: was allow, now deny \(no matching rule\)\n {6}\S+Z GET \/v1\/reports\//)

  const diff = await gatehouseAsync(['policy', 'diff', full, tight, '--replay', ...files, '--callee', PAYMENTS, '--trust-bundle', pki.bundleFile])
  t.equal(diff.status, 0, diff.stderr)
  t.match(diff.stdout, /^~ allow rule ledger \(paths\)\n- allow rule reports\n/, 'changed and removed rules')
  t.match(diff.stdout, /allow→deny 3x .*cron: was allow \(rule reports\), now deny \(no matching rule\)\n {6}because of: removed rule reports/)
  t.match(diff.stdout, /allow→deny 2x .*worker: was allow \(rule ledger\), now deny \(no matching rule\)\n {6}because of: changed rule ledger/)
  const plain = await gatehouseAsync(['policy', 'diff', tight, linted, '-o', 'json'])
  t.same(JSON.parse(plain.stdout).changes.map((c: { change: string, rule: string }) => `${c.change} ${c.rule}`).sort(),
    ['added admin-read', 'added legacy', 'added no-admin', 'added no-admin-users', 'added orders-get-again', 'added reports', 'changed ledger'])

  const unused = await gatehouseAsync(['audit', 'query', ...files, '--unused-rules', linted, '-o', 'json'])
  t.equal(unused.status, 0, unused.stderr)
  const u = JSON.parse(unused.stdout) as { unusedRules: Array<{ rule: string }>, shadowedRules: Array<{ rule: string, by: string, kind: string }> }
  t.same(u.unusedRules.map(x => x.rule).sort(), ['admin-read', 'legacy', 'no-admin-users', 'orders-get-again'], 'rules no request matched')
  t.same(u.shadowedRules, [
    { rule: 'no-admin-users', list: 'deny', by: 'no-admin', kind: 'shadowed' },
    { rule: 'admin-read', list: 'rules', by: 'no-admin', kind: 'shadowed' },
    { rule: 'orders-get-again', list: 'rules', by: 'orders-get', kind: 'redundant' }
  ], 'rules that can never match: under an earlier deny, or an earlier allow')
  const table = await gatehouseAsync(['audit', 'query', ...files, '--unused-rules', linted])
  t.match(table.stdout, /rules that can never match:\n {2}deny no-admin-users: every request it matches is denied first by deny rule no-admin\n/)

  const tampered = join(dir, 'payments-0.log')
  tamperOneLine(tampered)
  for (const args of [['policy', 'replay', full, ...files], ['policy', 'diff', full, tight, '--replay', ...files]]) {
    const refused = await gatehouseAsync([...args, '--trust-bundle', pki.bundleFile])
    t.equal(refused.status, 1, `${args.slice(0, 2).join(' ')}: a tampered log is refused`)
    t.match(refused.stderr, /refused: the logs do not verify \(TAMPERED/)
  }
})

t.test('shadowed rules: a static check that stays quiet where a rule still matches something', async t => {
  const p = (text: string): ReturnType<typeof parsePolicy>['policy'] => parsePolicy(`version: 1\n${text}`).policy
  t.same(shadowedRules(p(`rules:\n  - name: a\n    from: ["${ORDERS}"]\n    paths: ["/v1/**"]\ndeny:\n  - name: d\n    from: ["${ORDERS}"]\n    methods: [DELETE]\n    paths: ["/v1/**"]\n`)), [], 'a deny on fewer methods leaves the rule something')
  t.same(shadowedRules(p(`rules:\n  - name: a\n    from: ["${TD}/ns/orders/*/*"]\n    paths: ["/v1/x"]\ndeny:\n  - name: d\n    from: ["${ORDERS}"]\n`)), [], 'a deny on one caller of a pattern')
  t.same(shadowedRules(p(`rules:\n  - name: a\n    from: ["${ORDERS}"]\n    paths: ["/trap/x"]\ncanary: ["/trap/**"]\n`)).map(s => s.by), ['canary'], 'the canary paths deny first')
  t.same(shadowedRules(p(`rules:\n  - name: t\n    from: ["${BACKUP}"]\n    ports: [5432]\ndeny:\n  - name: d\n    from: ["${TD}/**"]\n`)), [], 'an HTTP deny never covers a TCP rule')
})
