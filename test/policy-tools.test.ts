import t from 'tap'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { gatehouseAsync } from './helpers/audit-log.ts'
import { policyRevision } from '../src/policy/load.ts'
import { tempDir } from './helpers/files.ts'

// The service owner's policy tools, run as the real executable: `policy check` (every problem at
// once, each with line and column; OK and the revision for a good file), `policy explain` (the
// decision, the deciding rule, and why each other rule did not match) and `policy test` (expected
// decisions for request fixtures, an exit status for CI, the failing cases with their line).

const TD = 'spiffe://example.org'
const ORDERS = `${TD}/ns/orders/sa/api`

const GOOD = `version: 1
rules:
  - name: orders-read
    from: ["${ORDERS}"]
    methods: [GET]
    paths: ["/v1/charges", "/v1/charges/**"]
  - name: billing-post
    from: ["${TD}/ns/billing/*/*"]
    methods: [POST]
deny:
  - name: no-admin
    from: ["${TD}/**"]
    paths: ["/admin/**"]
`

// Every line that holds a problem is marked with the column the problem is reported at.
const BAD = `version: 2
mode: sometimes
rules:
  - name: ok-rule
    from: ["${TD}/ns/a/sa/b"]
    method: [GET]
  - name: bad name
    from: ["not-a-spiffe-id"]
    paths: ["v1/x", "/a/**/b"]
    methods: [get]
  - name: no-from
    paths: ["/x"]
deny:
  - name: ok-rule
    from: []
`
const BAD_PROBLEMS: Array<[number, number, RegExp]> = [
  [1, 10, /version: expected 1/],
  [2, 7, /mode: expected enforce or audit, got "sometimes"/],
  [6, 5, /rules\[0\]: unknown key "method"/],
  [7, 11, /rules\[1\]\.name: expected a name of letters/],
  [8, 12, /rules\[1\]\.from: expected a SPIFFE ID or pattern.*got "not-a-spiffe-id"/],
  [9, 13, /rules\[1\]\.paths: expected a path starting with "\/", got "v1\/x"/],
  [9, 21, /rules\[1\]\.paths: "\*\*" may only be the last segment, got "\/a\/\*\*\/b"/],
  [10, 15, /rules\[1\]\.methods: expected an upper-case HTTP method, got "get"/],
  [11, 5, /rules\[2\]\.from: expected a non-empty list/],
  [14, 11, /deny\[0\]\.name: "ok-rule" is used by another rule/],
  [15, 11, /deny\[0\]\.from: expected a non-empty list/]
]

const CASES_PASS = `cases:
  - { caller: "${ORDERS}", method: GET, path: /v1/charges, expect: allow }
  - { caller: "${ORDERS}", method: GET, path: "/v1/charges/7?x=1", expect: allow }
  - { caller: "${ORDERS}", method: POST, path: /v1/charges, expect: deny }
  - { caller: "${ORDERS}", method: GET, path: /admin, expect: deny }
  - { caller: "${TD}/ns/billing/sa/worker", method: POST, path: /anything, expect: allow }
  - { caller: "${ORDERS}", method: GET, path: "/v1/./charges//7", expect: allow }
  - { caller: "${ORDERS}", method: GET, path: "/a%2Fb", expect: "400" }
  - { caller: "${ORDERS}", path: /v1/charges, expect: allow }
`

// Lines 3, 5 and 7 are wrong expectations; the others hold.
const CASES_FAIL = `- caller: "${ORDERS}"
  path: /v1/charges
  expect: allow
- caller: "${ORDERS}"
  path: /admin/users
  expect: allow
- caller: "${ORDERS}"
  path: "/a%2Fb"
  expect: deny
- caller: "${TD}/ns/billing/sa/worker"
  method: POST
  path: /v1/x
  expect: deny
- caller: "${ORDERS}"
  path: "/a%5Cb"
  expect: "400"
`

t.test('policy check, explain and test', async t => {
  const dir = tempDir(t)
  const write = (name: string, text: string): string => { const f = join(dir, name); writeFileSync(f, text); return f }
  const good = write('good.yaml', GOOD)
  const bad = write('bad.yaml', BAD)
  const broken = write('broken.yaml', 'version: 1\nrules:\n  - name: a\n    from: [unclosed\n')
  const passCases = write('pass.yaml', CASES_PASS)
  const failCases = write('fail.yaml', CASES_FAIL)
  const malformedCases = write('malformed.yaml', `- caller: "${ORDERS}"\n  path: /x\n  expect: maybe\n`)
  const explain = (caller: string, method: string, path: string): Promise<{ status: number | null, stdout: string, stderr: string }> =>
    gatehouseAsync(['policy', 'explain', good, '--caller', caller, '--method', method, '--path', path])

  // All started at once: node start-up is most of each run.
  const runs = {
    bad: gatehouseAsync(['policy', 'check', bad]),
    good: gatehouseAsync(['policy', 'check', good]),
    broken: gatehouseAsync(['policy', 'check', broken]),
    allow: explain(ORDERS, 'GET', '/v1/charges/7'),
    denyRule: explain(ORDERS, 'GET', '/admin/x'),
    noMatch: explain(`${TD}/ns/other/sa/x`, 'DELETE', '/nothing'),
    refused: explain(ORDERS, 'GET', '/a%2Fb'),
    pass: gatehouseAsync(['policy', 'test', good, '--cases', passCases]),
    fail: gatehouseAsync(['policy', 'test', good, '--cases', failCases]),
    malformed: gatehouseAsync(['policy', 'test', good, '--cases', malformedCases])
  }

  await t.test('policy check lists every problem with line and column', async t => {
    const r = await runs.bad
    t.equal(r.status, 1, 'exit 1')
    const lines = r.stdout.split('\n').filter(l => l !== '')
    t.equal(lines.at(-1), `${BAD_PROBLEMS.length} problem(s)`, 'a count of problems last')
    const problems = lines.slice(0, -1)
    t.equal(problems.length, BAD_PROBLEMS.length, 'every problem at once, not just the first')
    for (const [line, col, what] of BAD_PROBLEMS) {
      const hit = problems.find(p => p.startsWith(`${bad}:${line}:${col}: `) && what.test(p))
      t.ok(hit, `${line}:${col} ${String(what)}`)
    }
    t.ok(problems.every(p => /^.+:\d+:\d+: /.test(p)), 'each problem is file:line:col: message')

    const ok = await runs.good
    t.equal(ok.status, 0, 'a good file: exit 0')
    t.equal(ok.stdout, `OK ${policyRevision(GOOD)}: 2 allow rule(s), 1 deny rule(s), mode enforce\n`, 'OK, the revision and a summary')

    const syntax = await runs.broken
    t.equal(syntax.status, 1, 'a YAML syntax error: exit 1')
    t.match(syntax.stdout, new RegExp(`^${broken.replace(/[.]/g, '\\.')}:\\d+:\\d+: YAML syntax: `, 'm'), 'reported with line and column')
  })

  await t.test('policy explain: the decision, the deciding rule, and why each other rule did not match', async t => {
    const allow = await runs.allow
    t.equal(allow.status, 0)
    const rev = policyRevision(GOOD)
    t.equal(allow.stdout, [
      `ALLOW by rule "orders-read" (allow-rule), policy ${rev}, mode enforce`,
      'normalized path: /v1/charges/7',
      '  deny no-admin: no match: wrong path',
      '  allow orders-read: matches',
      '  allow billing-post: no match: wrong caller, method',
      ''
    ].join('\n'), 'allowed: by which rule, and why the others did not match')

    const denied = await runs.denyRule
    t.equal(denied.status, 3, 'deny: exit 3 (the answer, not an error), so a script can test it')
    t.match(denied.stdout, /^DENY by rule "no-admin" \(deny-rule\)/, 'denied by a deny rule')
    t.match(denied.stdout, /\n {2}deny no-admin: matches\n/)
    t.match(denied.stdout, /\n {2}allow orders-read: no match: wrong path\n/, 'right caller and method, wrong path')

    const none = await runs.noMatch
    t.equal(none.status, 3, 'default deny: exit 3')
    t.match(none.stdout, /^DENY \(no-matching-rule\)/, 'no rule: default deny, no deciding rule')
    t.match(none.stdout, /\n {2}allow orders-read: no match: wrong caller, method, path\n/, 'every reason listed')
    t.match(none.stdout, /\n {2}allow billing-post: no match: wrong caller, method\n/)
    t.match(none.stdout, /\n {2}deny no-admin: no match: wrong path\n/)

    const refused = await runs.refused
    t.equal(refused.status, 3, 'refused before the policy (400): exit 3, like a deny')
    t.match(refused.stdout, /^400 \(refused before the policy: encoded slash/, 'an encoded slash: 400 before any rule')
  })

  await t.test('policy test: exit 0 when every case holds, 1 with the failing cases and their lines', async t => {
    const pass = await runs.pass
    t.equal(pass.status, 0, 'all cases pass: exit 0')
    t.equal(pass.stdout, '8 of 8 cases pass\n', 'including "400" for /a%2Fb, normalized paths and the default method')

    const fail = await runs.fail
    t.equal(fail.status, 1, 'a failing case: exit 1')
    const failures = fail.stdout.split('\n').filter(l => l.startsWith('FAIL '))
    t.equal(failures.length, 3, 'exactly the three wrong expectations are printed')
    t.match(failures[0], new RegExp(`^FAIL ${failCases}:4:3: GET /admin/users from ${ORDERS}: expected allow, got deny \\(rule no-admin\\)`), 'case 2, at its line')
    t.match(failures[1], new RegExp(`^FAIL ${failCases}:7:3: GET /a%2Fb from ${ORDERS}: expected deny, got 400: refused before the policy`), 'case 3: expecting deny where the request is refused with 400')
    t.match(failures[2], new RegExp(`^FAIL ${failCases}:10:3: POST /v1/x from ${TD}/ns/billing/sa/worker: expected deny, got allow \\(rule billing-post\\)`), 'case 4')
    t.match(fail.stdout, /\n2 of 5 cases pass\n$/, 'a tally')
    t.notMatch(fail.stdout, /\/a%5Cb/, 'passing cases are not printed')

    const malformed = await runs.malformed
    t.equal(malformed.status, 2, 'a case without a valid expectation is a configuration error (exit 2)')
    t.match(malformed.stderr, /case 1: needs caller, path \(or port, for a TCP connection\) and expect \(allow, deny or 400\)/)
  })
})
