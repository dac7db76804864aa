import t from 'tap'
import { parsePolicy } from '../src/policy/load.ts'
import { compilePolicy } from '../src/policy/compile.ts'
import { decide } from '../src/policy/decide.ts'
import { ANNOTATED_EXAMPLE, request, compile } from './helpers/policy-facts.ts'

// The policy file (docs/policy.md), matching semantics through decide(): deny before allow, caller,
// method and path matching, audit mode, and per-caller rule lists at scale. Parsing and validation:
// policy-parse.test.ts; the store: policy-store.test.ts.

t.test('semantics', async t => {
  const TD = 'spiffe://cluster.local'

  t.test('deny rules are checked first and win over a matching allow rule', async t => {
    const p = compile(`version: 1
rules:
  - name: allow-all-billing
    from: ["${TD}/ns/billing/**"]
deny:
  - name: no-admin
    from: ["${TD}/ns/billing/**"]
    paths: ["/admin/**"]
`)
    const allowed = decide(p, request(`${TD}/ns/billing/sa/a`, 'GET', '/v1/x'))
    t.same(allowed, { decision: 'allow', allowed: true, mode: 'enforce', rule: 'allow-all-billing', reason: 'allow-rule' })
    const denied = decide(p, request(`${TD}/ns/billing/sa/a`, 'GET', '/admin/users'))
    t.same(denied, { decision: 'deny', allowed: false, mode: 'enforce', rule: 'no-admin', reason: 'deny-rule' })
    t.match(decide(p, request(`${TD}/ns/billing/sa/a`, 'GET', '/admin')), { rule: 'no-admin' }, '/admin/** covers /admin itself')
    t.match(decide(p, request(`${TD}/ns/billing/sa/a`, 'GET', '/v1/../admin/x')), { rule: 'no-admin' }, 'matched after normalization')
  })

  t.test('allow if any rule matches; default deny otherwise', async t => {
    const p = compile(`version: 1
rules:
  - name: reads
    from: ["${TD}/ns/a/sa/reader"]
    methods: [GET]
  - name: writes
    from: ["${TD}/ns/a/sa/writer"]
    methods: [POST]
`)
    t.match(decide(p, request(`${TD}/ns/a/sa/reader`, 'GET', '/x')), { decision: 'allow', rule: 'reads' })
    t.match(decide(p, request(`${TD}/ns/a/sa/writer`, 'POST', '/x')), { decision: 'allow', rule: 'writes' }, 'the second rule matches')
    const none = decide(p, request(`${TD}/ns/a/sa/reader`, 'POST', '/x'))
    t.same(none, { decision: 'deny', allowed: false, mode: 'enforce', rule: null, reason: 'no-matching-rule' })

    const empty = compile('version: 1\n')
    t.same(decide(empty, request(`${TD}/ns/a/sa/reader`, 'GET', '/')), { decision: 'deny', allowed: false, mode: 'enforce', rule: null, reason: 'no-matching-rule' }, 'a policy with no rules denies everything')
  })

  t.test('methods absent = any method; paths absent = any path', async t => {
    const p = compile(`version: 1
rules:
  - name: anything
    from: ["${TD}/ns/a/sa/b"]
  - name: only-paths
    from: ["${TD}/ns/c/sa/d"]
    paths: ["/p"]
  - name: only-methods
    from: ["${TD}/ns/e/sa/f"]
    methods: [DELETE]
`)
    for (const method of ['GET', 'POST', 'DELETE', 'PATCH', 'PROPFIND']) {
      for (const target of ['/', '/a', '/a/b/c/d', '/x/y/']) {
        t.match(decide(p, request(`${TD}/ns/a/sa/b`, method, target)), { allowed: true, rule: 'anything' }, `${method} ${target}`)
      }
      t.match(decide(p, request(`${TD}/ns/c/sa/d`, method, '/p')), { allowed: true, rule: 'only-paths' }, `${method} /p`)
      t.match(decide(p, request(`${TD}/ns/e/sa/f`, method, '/q/r')), { allowed: method === 'DELETE' }, `methods given: ${method}`)
    }
    t.match(decide(p, request(`${TD}/ns/c/sa/d`, 'GET', '/q')), { allowed: false, rule: null }, 'paths given: other path')
  })

  t.test('callers: exact IDs and patterns', async t => {
    const p = compile(`version: 1
rules:
  - name: exact
    from: ["${TD}/ns/orders/sa/api"]
    paths: ["/exact"]
  - name: one-segment
    from: ["${TD}/ns/billing/*"]
    paths: ["/one"]
  - name: any-depth
    from: ["${TD}/ns/billing/**"]
    paths: ["/deep"]
  - name: middle-star
    from: ["${TD}/ns/*/sa/api"]
    paths: ["/middle"]
  - name: whole-domain
    from: ["${TD}/**"]
    paths: ["/domain"]
`)
    const allows = (id: string, path: string): boolean => decide(p, request(id, 'GET', path)).allowed
    t.ok(allows(`${TD}/ns/orders/sa/api`, '/exact'))
    t.notOk(allows(`${TD}/ns/orders/sa/api2`, '/exact'), 'exact is exact')
    t.notOk(allows(`${TD}/ns/orders/sa`, '/exact'))
    t.notOk(allows(`${TD}/ns/orders/sa/api/x`, '/exact'))
    t.notOk(allows('spiffe://other.domain/ns/orders/sa/api', '/exact'))

    t.ok(allows(`${TD}/ns/billing/x`, '/one'), '* is one segment')
    t.notOk(allows(`${TD}/ns/billing/x/y`, '/one'), '* is not two segments')
    t.notOk(allows(`${TD}/ns/billing`, '/one'), '* is not zero segments')
    t.notOk(allows(`${TD}/ns/billingx/y`, '/one'))

    t.ok(allows(`${TD}/ns/billing`, '/deep'), 'final ** includes zero segments')
    t.ok(allows(`${TD}/ns/billing/x`, '/deep'))
    t.ok(allows(`${TD}/ns/billing/x/y/z/w`, '/deep'))
    t.notOk(allows(`${TD}/ns/billingx`, '/deep'), 'segments, not string prefixes')
    t.notOk(allows(`${TD}/ns`, '/deep'))

    t.ok(allows(`${TD}/ns/orders/sa/api`, '/middle'))
    t.ok(allows(`${TD}/ns/billing/sa/api`, '/middle'))
    t.notOk(allows(`${TD}/ns/a/b/sa/api`, '/middle'))
    t.notOk(allows(`${TD}/ns/orders/sa/web`, '/middle'))

    t.ok(allows(`${TD}/anything/at/all`, '/domain'))
    t.ok(allows(TD, '/domain'), 'the trust domain ID itself is under TD/**')

    // Another trust domain never matches a pattern of this one, whatever its path.
    for (const path of ['/one', '/deep', '/middle', '/domain']) {
      t.notOk(allows('spiffe://evil.example/ns/billing/x', path), `foreign trust domain, ${path}`)
      t.notOk(allows('spiffe://cluster.local.evil/ns/billing/x', path), `look-alike trust domain, ${path}`)
    }
    t.notOk(allows('spiffe://evil.example/ns/orders/sa/api', '/middle'))
    t.notOk(allows('spiffe://evil.example', '/domain'))
  })

  t.test('paths: exact, * one segment, final ** any depth', async t => {
    const p = compile(`version: 1
rules:
  - name: charges
    from: ["${TD}/ns/a/sa/b"]
    paths: ["/v1/charges/**"]
  - name: items
    from: ["${TD}/ns/a/sa/c"]
    paths: ["/v1/*/items"]
  - name: root-star
    from: ["${TD}/ns/a/sa/d"]
    paths: ["/*"]
  - name: exact
    from: ["${TD}/ns/a/sa/e"]
    paths: ["/v1/exact", "/"]
  - name: everything
    from: ["${TD}/ns/a/sa/f"]
    paths: ["/**"]
`)
    const allows = (sa: string, target: string): boolean => decide(p, request(`${TD}/ns/a/sa/${sa}`, 'GET', target)).allowed
    for (const path of ['/v1/charges', '/v1/charges/1', '/v1/charges/1/refunds', '/v1/charges/', '/v1/charges/1/refunds/2/x']) {
      t.ok(allows('b', path), `/v1/charges/** matches ${path}`)
    }
    for (const path of ['/v1/chargesX', '/v1/charge', '/v1', '/', '/v2/charges/1', '/x/v1/charges']) {
      t.notOk(allows('b', path), `/v1/charges/** does not match ${path}`)
    }

    t.ok(allows('c', '/v1/abc/items'))
    t.notOk(allows('c', '/v1/items'), '* is not zero segments')
    t.notOk(allows('c', '/v1/a/b/items'), '* is not two segments')
    t.notOk(allows('c', '/v1/abc/items/1'))

    t.ok(allows('d', '/x'))
    t.notOk(allows('d', '/'), '/* needs one segment')
    t.notOk(allows('d', '/x/y'))

    t.ok(allows('e', '/v1/exact'))
    t.ok(allows('e', '/'))
    t.ok(allows('e', '/v1//exact'), 'matched in normalized form')
    t.notOk(allows('e', '/v1/exact/sub'))
    t.notOk(allows('e', '/v1/exactly'))

    for (const path of ['/', '/a', '/a/b/c', '/a/b/c/']) t.ok(allows('f', path), `/** matches ${path}`)
  })

  t.test('audit mode: a would-be deny is logged as deny and still allowed', async t => {
    const p = compile(`version: 1
mode: audit
rules:
  - name: reads
    from: ["${TD}/ns/a/sa/b"]
    methods: [GET]
deny:
  - name: no-admin
    from: ["${TD}/**"]
    paths: ["/admin/**"]
`)
    t.same(decide(p, request(`${TD}/ns/a/sa/b`, 'GET', '/admin/x')), { decision: 'deny', allowed: true, mode: 'audit', rule: 'no-admin', reason: 'deny-rule' })
    t.same(decide(p, request(`${TD}/ns/a/sa/b`, 'POST', '/x')), { decision: 'deny', allowed: true, mode: 'audit', rule: null, reason: 'no-matching-rule' })
    t.same(decide(p, request(`${TD}/ns/a/sa/b`, 'GET', '/x')), { decision: 'allow', allowed: true, mode: 'audit', rule: 'reads', reason: 'allow-rule' })
  })

  t.test('the first matching rule is the one reported', async t => {
    const p = compile(`version: 1
rules:
  - name: narrow
    from: ["${TD}/ns/a/sa/b"]
    methods: [GET]
    paths: ["/x"]
  - name: first-broad
    from: ["${TD}/ns/a/**"]
  - name: second-broad
    from: ["${TD}/**"]
deny:
  - name: deny-first
    from: ["${TD}/ns/z/*"]
    paths: ["/secret/**"]
  - name: deny-second
    from: ["${TD}/ns/z/**"]
`)
    t.match(decide(p, request(`${TD}/ns/a/sa/b`, 'GET', '/x')), { rule: 'narrow' })
    t.match(decide(p, request(`${TD}/ns/a/sa/b`, 'POST', '/x')), { rule: 'first-broad' })
    t.match(decide(p, request(`${TD}/ns/q`, 'GET', '/x')), { rule: 'second-broad' })
    t.match(decide(p, request(`${TD}/ns/z/w`, 'GET', '/secret/1')), { decision: 'deny', rule: 'deny-first' })
    t.match(decide(p, request(`${TD}/ns/z/w`, 'GET', '/public')), { decision: 'deny', rule: 'deny-second' })
    t.match(decide(p, request(`${TD}/ns/z/w/v`, 'GET', '/secret/1')), { decision: 'deny', rule: 'deny-second' })
  })
})

t.test('1000 exact-caller rules: the last one still matches (correctness, not timing)', async t => {
  const n = 1000
  const rules = Array.from({ length: n }, (_, i) => `  - name: rule-${i}\n    from: ["spiffe://cluster.local/ns/n${i}/sa/s${i}"]\n    methods: [GET]\n`).join('')
  const loaded = parsePolicy(`version: 1\nrules:\n${rules}`, 'big.yaml')
  t.equal(loaded.policy.rules.length, n)
  const p = compilePolicy(loaded.policy)
  t.equal(p.allow.length, n)
  t.match(decide(p, request(`spiffe://cluster.local/ns/n${n - 1}/sa/s${n - 1}`, 'GET', '/x')), { decision: 'allow', rule: `rule-${n - 1}` })
  t.match(decide(p, request('spiffe://cluster.local/ns/n0/sa/s0', 'GET', '/x')), { decision: 'allow', rule: 'rule-0' })
  t.match(decide(p, request('spiffe://cluster.local/ns/n500/sa/s500', 'GET', '/x')), { decision: 'allow', rule: 'rule-500' })
  t.match(decide(p, request(`spiffe://cluster.local/ns/n${n - 1}/sa/s${n - 1}`, 'POST', '/x')), { decision: 'deny', rule: null, reason: 'no-matching-rule' })
  t.match(decide(p, request(`spiffe://cluster.local/ns/n${n}/sa/s${n}`, 'GET', '/x')), { decision: 'deny', rule: null })
})

t.test('per-caller rule lists: one caller\'s candidates never answer for another, across policies and past the cache size', async t => {
  const p = compile(ANNOTATED_EXAMPLE)
  const ok = request('spiffe://cluster.local/ns/orders/sa/api', 'POST', '/v1/charges')
  const other = request('spiffe://cluster.local/ns/orders/sa/batch', 'POST', '/v1/charges')
  t.equal(decide(p, ok).decision, 'allow')
  t.equal(decide(p, other).decision, 'deny', 'a caller decided after an allowed one is judged on its own rules')
  t.equal(decide(p, ok).rule, 'orders-create-charges', 'and the first caller again, from its cached list')
  // The same caller under a policy that no longer names it.
  const stricter = compile(ANNOTATED_EXAMPLE.replace('"spiffe://cluster.local/ns/orders/sa/api", ', ''))
  t.equal(decide(stricter, ok).decision, 'deny', 'a new policy is not answered from the old policy\'s lists')
  // Many distinct callers (past the 1,024 kept per list): every decision still right.
  let wrong = 0
  for (let i = 0; i < 2500; i++) {
    const billing = decide(p, request(`spiffe://cluster.local/ns/billing/sa-${i}`, 'POST', '/v1/charges/x')).decision
    const stranger = decide(p, request(`spiffe://cluster.local/ns/other/sa-${i}`, 'POST', '/v1/charges/x')).decision
    if (billing !== 'allow' || stranger !== 'deny') wrong++
  }
  t.equal(wrong, 0, '2,500 billing callers allowed and 2,500 strangers denied')
  t.equal(decide(p, request('spiffe://cluster.local/ns/legacy/sa/old', 'POST', '/v1/charges')).reason, 'deny-rule', 'deny rules are per caller too')
})
