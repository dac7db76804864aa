import t, { type Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parsePolicy, policyRevision } from '../src/policy/load.ts'
import { compilePolicy, type CompiledPolicy } from '../src/policy/compile.ts'
import { matchSegments, callerPatternProblem, pathPatternProblem } from '../src/policy/patterns.ts'
import { decide, type Caller, type RequestFacts, type Decision } from '../src/policy/decide.ts'
import { normalizeTarget } from '../src/policy/normalize.ts'
import { PolicyStore } from '../src/policy/policy-store.ts'
import { PolicyInvalidError, GatehouseError } from '../src/errors.ts'
import { createLogger, silentLogger } from '../src/log.ts'
import { SpiffeId } from '../src/spiffe/id.ts'

// The policy file (docs/policy.md): parsing and revisions, matching semantics through
// decide(), validation with file:line:col for every kind of problem, and the store that keeps the
// last good policy across bad reloads.

// An annotated policy using every field, comments included, byte for byte.
const ANNOTATED_EXAMPLE = `version: 1
mode: enforce                 # or audit: would-be denials are logged, then allowed
rules:                        # allow rules; a request is allowed if any rule matches
  - name: orders-create-charges
    from: ["spiffe://cluster.local/ns/orders/sa/api", "spiffe://cluster.local/ns/billing/*"]
    methods: [POST]           # optional; absent = any method
    paths: ["/v1/charges", "/v1/charges/**"]   # optional; * = one segment, ** = any depth
deny:                         # checked first; any match denies, whatever the allow rules say
  - name: quarantined
    from: ["spiffe://cluster.local/ns/legacy/sa/old"]
`

function callerOf (id: string): Caller {
  const s = SpiffeId.parse(id)
  return { id: s.toString(), trustDomain: s.trustDomain, segments: s.isRoot ? [] : s.path.split('/').slice(1) }
}

function request (id: string, method: string, target: string): RequestFacts {
  const n = normalizeTarget(target)
  if (!n.ok) throw new Error(`test bug: ${target} is refused (${n.reason})`)
  return { caller: callerOf(id), method, path: n.path, segments: n.segments }
}

function compile (yaml: string): CompiledPolicy {
  return compilePolicy(parsePolicy(yaml, 'test.yaml').policy)
}

/** The problems parsePolicy reports for `yaml` (fails the test if it parses). */
function problemsOf (t: Test, yaml: string, source = 'p.yaml'): string[] {
  try {
    parsePolicy(yaml, source)
  } catch (err) {
    t.type(err, PolicyInvalidError)
    t.type(err, GatehouseError)
    t.equal((err as PolicyInvalidError).code, 'GH_POLICY_INVALID')
    return (err as PolicyInvalidError).problems
  }
  t.fail('policy was accepted', { yaml })
  return []
}

t.test('the annotated example parses; the revision is a hash of the exact bytes', async t => {
  const loaded = parsePolicy(ANNOTATED_EXAMPLE, 'policy.yaml')
  t.same(loaded.policy, {
    version: 1,
    mode: 'enforce',
    rules: [{
      name: 'orders-create-charges',
      from: ['spiffe://cluster.local/ns/orders/sa/api', 'spiffe://cluster.local/ns/billing/*'],
      methods: ['POST'],
      paths: ['/v1/charges', '/v1/charges/**']
    }],
    deny: [{ name: 'quarantined', from: ['spiffe://cluster.local/ns/legacy/sa/old'] }],
    canary: []
  })
  t.equal(loaded.source, 'policy.yaml')
  t.match(loaded.revision, /^sha256:[0-9a-f]{16}$/)
  t.equal(loaded.revision, policyRevision(ANNOTATED_EXAMPLE))
  t.equal(parsePolicy(ANNOTATED_EXAMPLE, 'elsewhere.yaml').revision, loaded.revision, 'identical text, identical revision (the file name plays no part)')

  // One byte changed, even in a comment or whitespace, is another revision.
  const oneByte = ANNOTATED_EXAMPLE.replace('# or audit', '# Or audit')
  t.equal(oneByte.length, ANNOTATED_EXAMPLE.length)
  t.not(parsePolicy(oneByte).revision, loaded.revision, 'a one-byte change in a comment')
  t.not(parsePolicy(`${ANNOTATED_EXAMPLE}\n`).revision, loaded.revision, 'one trailing newline more')
  t.not(parsePolicy(ANNOTATED_EXAMPLE.replace('"/v1/charges",', '"/v1/chargez",')).revision, loaded.revision, 'a one-byte change in a path')

  // The example decides as its comments say.
  const p = compilePolicy(loaded.policy)
  t.match(decide(p, request('spiffe://cluster.local/ns/orders/sa/api', 'POST', '/v1/charges')), { decision: 'allow', allowed: true, rule: 'orders-create-charges', reason: 'allow-rule', mode: 'enforce' })
  t.match(decide(p, request('spiffe://cluster.local/ns/billing/worker', 'POST', '/v1/charges/ch_1/refunds')), { decision: 'allow', rule: 'orders-create-charges' })
  t.match(decide(p, request('spiffe://cluster.local/ns/orders/sa/api', 'GET', '/v1/charges')), { decision: 'deny', allowed: false, rule: null, reason: 'no-matching-rule' })
  t.match(decide(p, request('spiffe://cluster.local/ns/legacy/sa/old', 'POST', '/v1/charges')), { decision: 'deny', allowed: false, rule: 'quarantined', reason: 'deny-rule' })
})

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

t.test('matchSegments', async t => {
  const pat = (segments: string[], anyDepth: boolean): { segments: string[], anyDepth: boolean } => ({ segments, anyDepth })
  t.ok(matchSegments(pat(['a', '*'], false), ['a', 'b']))
  t.notOk(matchSegments(pat(['a', '*'], false), ['a']))
  t.notOk(matchSegments(pat(['a', '*'], false), ['a', 'b', 'c']))
  t.ok(matchSegments(pat(['a'], true), ['a']))
  t.ok(matchSegments(pat(['a'], true), ['a', 'b', 'c']))
  t.notOk(matchSegments(pat(['a'], true), []))
  t.notOk(matchSegments(pat(['a'], true), ['ab']))
  t.ok(matchSegments(pat([], true), []))
  t.ok(matchSegments(pat([], false), []))
  t.notOk(matchSegments(pat([], false), ['a']))
})

t.test('callerPatternProblem and pathPatternProblem', async t => {
  for (const ok of ['spiffe://td/a', 'spiffe://td/ns/billing/*', 'spiffe://td/**', 'spiffe://td/*/sa/x', 'spiffe://cluster.local/ns/A_b.c-d/sa/x']) {
    t.equal(callerPatternProblem(ok), undefined, ok)
  }
  for (const bad of ['billing', 'spiffe://Cluster.local/x', 'spiffe://td/**/x', 'spiffe://td/a*', 'spiffe://td', 'spiffe://td/', 'spiffe://td/a//b',
    'spiffe://td/a/', 'spiffe://td/./a', 'spiffe://td/a/..', 'SPIFFE://td/a', 'spiffe:///a', 'spiffe://*/a', 'spiffe://td/a b', 'https://td/a', 'spiffe://td/***']) {
    t.type(callerPatternProblem(bad), 'string', bad)
  }
  for (const ok of ['/', '/v1', '/v1/', '/v1/*', '/v1/*/items', '/**', '/v1/**', '/a%20b', '/a:b', '/~user']) {
    t.equal(pathPatternProblem(ok), undefined, ok)
  }
  for (const bad of ['', 'v1/x', '*', '/a/**/b', '/**/a', '/a//b', '//', '/a/../b', '/a/./b', '/..', '/a;b', '/a%2Fb', '/a%2fb', '/a%5Cb', '/a%00',
    '/a*b', '/a/b*', '/a/***', '/a?x=1', '/a#f', '/a\\b', '/a b']) {
    t.type(pathPatternProblem(bad), 'string', JSON.stringify(bad))
  }
  // Patterns that could never match a normalized request are refused rather than silently inert
  // (in a deny rule they would deny nothing).
  for (const bad of ['/%7Euser/**', '/%7euser', '/%41dmin', '/a%2Db', '/a%2E', '/%5F', '/x%30', '/v1/*/', '/*/', '/v1/*/items/']) {
    t.type(pathPatternProblem(bad), 'string', JSON.stringify(bad))
  }
  for (const ok of ['/a%20b', '/a:b', '/a%25', '/v1/items/', '/a%7B%7D']) {
    t.equal(pathPatternProblem(ok), undefined, `${ok}: already in normalized form, so it can match`)
  }
  for (const notCanonical of ['/a%3Ab', '/a%7b', '/%7Euser']) {
    t.match(pathPatternProblem(notCanonical), /normalized form/, `${notCanonical}: another spelling of a normalized path is refused`)
  }
})

t.test('validation: every problem at once, each at its file:line:col', async t => {
  const yaml = `version: 2
mode: enforcing
extra: true
rules:
  - name: ok-rule
    from: ["spiffe://td/ns/a/sa/b"]
    method: [GET]
  - from: ["spiffe://td/x"]
  - name: ok-rule
    from: ["spiffe://td/y"]
  - name: no-from
  - name: empty-from
    from: []
  - name: scalar-from
    from: "spiffe://td/x"
  - name: bad-callers
    from:
      - billing
      - spiffe://Cluster.local/x
      - "spiffe://td/**/x"
      - "spiffe://td/a*"
  - name: bad-methods
    from: ["spiffe://td/x"]
    methods: [post, GET]
  - name: bad-paths
    from: ["spiffe://td/x"]
    paths:
      - v1/x
      - /a/**/b
      - /a//b
      - /a/../b
      - /a;b
      - /a%2Fb
      - /a*b
      - /fine/**
deny:
  - name: bad name!
    from: [spiffe://td/z]
  - name: ok-rule
    from: [spiffe://td/z]
`
  const problems = problemsOf(t, yaml, 'conf/policy.yaml')
  const at = (loc: string, rest: RegExp): RegExp => new RegExp(`^conf/policy\\.yaml:${loc}: ${rest.source}`)
  const expected = [
    at('3:1', /unknown key "extra"/),
    at('1:10', /version: expected 1/),
    at('2:7', /mode: expected enforce or audit, got "enforcing"/),
    at('7:5', /rules\[0\]: unknown key "method"/),
    at('8:5', /rules\[1\]\.name: expected a name/),
    at('9:11', /rules\[2\]\.name: "ok-rule" is used by another rule/),
    at('11:5', /rules\[3\]\.from: expected a non-empty list/),
    at('13:11', /rules\[4\]\.from: expected a non-empty list/),
    at('15:11', /rules\[5\]\.from: expected a non-empty list/),
    at('18:9', /rules\[6\]\.from: expected a SPIFFE ID.*got "billing"/),
    at('19:9', /rules\[6\]\.from: the trust domain .* full, got "spiffe:\/\/Cluster\.local\/x"/),
    at('20:9', /rules\[6\]\.from: "\*\*" may only be the last segment, got "spiffe:\/\/td\/\*\*\/x"/),
    at('21:9', /rules\[6\]\.from: segment "a\*" is not valid in a SPIFFE ID, got "spiffe:\/\/td\/a\*"/),
    at('24:15', /rules\[7\]\.methods: expected an upper-case HTTP method, got "post"/),
    at('28:9', /rules\[8\]\.paths: expected a path starting with "\/", got "v1\/x"/),
    at('29:9', /rules\[8\]\.paths: "\*\*" may only be the last segment, got "\/a\/\*\*\/b"/),
    at('30:9', /rules\[8\]\.paths: empty segment .*got "\/a\/\/b"/),
    at('31:9', /rules\[8\]\.paths: dot segments never match.*got "\/a\/\.\.\/b"/),
    at('32:9', /rules\[8\]\.paths: a path pattern holds no .*got "\/a;b"/),
    at('33:9', /rules\[8\]\.paths: a path pattern holds no .*got "\/a%2Fb"/),
    at('34:9', /rules\[8\]\.paths: "\*" must be a whole segment, got "\/a\*b"/),
    at('37:11', /deny\[0\]\.name: expected a name/),
    at('39:11', /deny\[1\]\.name: "ok-rule" is used by another rule/)
  ]
  t.equal(problems.length, expected.length, 'one problem per mistake, nothing else', { problems })
  for (const [i, re] of expected.entries()) t.match(problems[i], re, `problem ${i}: ${re.source}`)
  // The error message lists every problem too (what the CLI prints).
  try { parsePolicy(yaml, 'conf/policy.yaml') } catch (err) {
    for (const p of problems) t.ok((err as Error).message.includes(p))
  }
})

t.test('validation: document-level problems', async t => {
  t.test('version missing is reported at the first key', async t => {
    t.same(problemsOf(t, '# comment\nmode: audit\n'), ['p.yaml:2:1: version: expected 1'])
  })
  t.test('version must be the number 1', async t => {
    t.match(problemsOf(t, 'version: "1"\n'), [/^p\.yaml:1:10: version: expected 1$/])
    t.match(problemsOf(t, 'version: 2\n'), [/^p\.yaml:1:10: version: expected 1$/])
    t.match(problemsOf(t, 'version:\n'), [/^p\.yaml:1:9: version: expected 1$/])
  })
  t.test('mode', async t => {
    t.same(problemsOf(t, 'version: 1\nmode: enforcing\n'), ['p.yaml:2:7: mode: expected enforce or audit, got "enforcing"'])
    t.same(problemsOf(t, 'version: 1\nmode: Audit\n'), ['p.yaml:2:7: mode: expected enforce or audit, got "Audit"'])
    t.same(problemsOf(t, 'version: 1\nmode: [audit]\n'), ['p.yaml:2:7: mode: expected enforce or audit, got null'])
    t.equal(parsePolicy('version: 1\n').policy.mode, 'enforce', 'mode absent = enforce')
    t.equal(parsePolicy('version: 1\nmode: audit\n').policy.mode, 'audit')
  })
  t.test('rules and deny must be lists of mappings', async t => {
    t.same(problemsOf(t, 'version: 1\nrules:\n  name: a\n  from: [spiffe://td/a]\n'), ['p.yaml:3:3: rules: expected a list of rules'])
    t.same(problemsOf(t, 'version: 1\ndeny: spiffe://td/a\n'), ['p.yaml:2:7: deny: expected a list of rules'])
    t.same(problemsOf(t, 'version: 1\nrules:\n  - spiffe://td/a\n'), ['p.yaml:3:5: rules[0]: expected a mapping with name, from, methods, paths'])
  })
  t.test('a top-level list instead of a map', async t => {
    t.same(problemsOf(t, '- version: 1\n- rules: []\n'), ['p.yaml:1:1: expected a mapping with version, mode, rules and deny'])
    t.same(problemsOf(t, '\n\n[version, 1]\n'), ['p.yaml:3:1: expected a mapping with version, mode, rules and deny'])
  })
  t.test('an empty file or a bare scalar', async t => {
    t.match(problemsOf(t, ''), [/^p\.yaml: expected a mapping/])
    t.match(problemsOf(t, 'version 1\n'), [/^p\.yaml:1:1: expected a mapping/])
  })
  t.test('YAML syntax errors give a line', async t => {
    const problems = problemsOf(t, 'version: 1\nrules:\n  - name: a\n    from: [spiffe://td/a\n  - name: b\n')
    t.ok(problems.length > 0)
    for (const p of problems) t.match(p, /^p\.yaml:\d+:\d+: YAML syntax: /)
    t.match(problems[0], /^p\.yaml:[45]:\d+: /, 'at or just after the unclosed flow sequence', { problems })

    t.match(problemsOf(t, 'version: 1\nmode: audit: yes\nrules: []\n'), [/^p\.yaml:2:\d+: YAML syntax: /], 'a nested mapping in a compact one')
    // An unterminated quote runs to the end of the file, which is where the YAML parser reports it.
    t.match(problemsOf(t, 'version: 1\nmode: "audit\nrules: []\n'), [/^p\.yaml:4:1: YAML syntax: Missing closing "quote/])
    t.match(problemsOf(t, 'version: 1\n\tmode: audit\n'), [/^p\.yaml:2:\d+: YAML syntax: /], 'a tab indent')
    t.match(problemsOf(t, 'version: 1\n---\nversion: 1\n'), [/^p\.yaml:2:1: YAML syntax: .*multiple documents/], 'two documents in one file')
  })
  t.test('duplicate keys are refused, at the second one', async t => {
    t.match(problemsOf(t, 'version: 1\nmode: enforce\nmode: audit\n'), [/^p\.yaml:3:1: YAML syntax: Map keys must be unique/])
    t.match(problemsOf(t, 'version: 1\n"version": 1\n'), [/^p\.yaml:2:1: YAML syntax: Map keys must be unique/], 'quoted spelling of the same key')
    t.match(problemsOf(t, 'version: 1\nrules:\n  - name: a\n    from: [spiffe://td/a]\n    paths: ["/x"]\n    paths: ["/y"]\n'),
      [/^p\.yaml:6:5: YAML syntax: Map keys must be unique/], 'a second paths would otherwise replace the first')
  })
  t.test('YAML merge keys and aliases do not sneak keys in', async t => {
    t.match(problemsOf(t, 'version: 1\nrules:\n  - name: a\n    from: [spiffe://td/a]\n    <<: {methods: [GET]}\n'), [/^p\.yaml:5:5: rules\[0\]: unknown key "<<"/])
  })
  t.test('non-string list entries', async t => {
    t.same(problemsOf(t, 'version: 1\nrules:\n  - name: a\n    from: [spiffe://td/a]\n    methods: [1]\n    paths: [[/x]]\n'), [
      'p.yaml:5:15: rules[0].methods: expected a string, got 1',
      'p.yaml:6:13: rules[0].paths: expected a string, got null'
    ])
  })
  t.test('empty methods or paths lists are refused (absent means any; empty would be a typo)', async t => {
    t.same(problemsOf(t, 'version: 1\nrules:\n  - name: a\n    from: [spiffe://td/a]\n    methods: []\n    paths: []\n'), [
      'p.yaml:5:14: rules[0].methods: expected a non-empty list',
      'p.yaml:6:12: rules[0].paths: expected a non-empty list'
    ])
  })
  t.test('path patterns that would never match a request are refused', async t => {
    const yaml = 'version: 1\ndeny:\n  - name: d\n    from: ["spiffe://td/**"]\n    paths: ["/%7Euser/**", "/v1/*/", "/ok/**"]\n'
    t.match(problemsOf(t, yaml), [
      /^p\.yaml:5:13: deny\[0\]\.paths: write this segment as "~user": paths are matched in normalized form, got "\/%7Euser\/\*\*"$/,
      /^p\.yaml:5:28: deny\[0\]\.paths: a pattern with "\*" cannot end in "\/" .*got "\/v1\/\*\/"$/
    ])
    // Why: normalization decodes %7E and drops the empty last segment, so neither pattern could deny anything.
    const n = normalizeTarget('/%7Euser/x/')
    t.match(n, { ok: true, path: '/~user/x/', segments: ['~user', 'x'] })
  })
  t.test('the source defaults to "policy"', async t => {
    try { parsePolicy('version: 2\n') } catch (err) { t.same((err as PolicyInvalidError).problems, ['policy:1:10: version: expected 1']) }
  })
})

interface LogLine { level: number, event?: string, code?: string, trigger?: string, problems?: string[], keptRevision?: string | null, revision?: string, msg: string }

function capturingLogger (): { logger: ReturnType<typeof createLogger>, lines: LogLine[] } {
  const lines: LogLine[] = []
  const logger = createLogger('policy-test', { level: 'debug', destination: { write: (s: string) => { lines.push(JSON.parse(s) as LogLine) } } })
  return { logger, lines }
}

const V1 = `version: 1
rules:
  - name: v1-rule
    from: ["spiffe://td/ns/a/sa/b"]
`
const V2 = `version: 1
rules:
  - name: v2-rule
    from: ["spiffe://td/ns/a/sa/b"]
`
const V3 = V2.replace('v2-rule', 'v3-rule')
const INVALID = `version: 1
rules:
  - name: broken
    from: ["spiffe://td/ns/a/sa/b"]
    method: [GET]
`

function decideWith (store: PolicyStore): Decision {
  const current = store.current
  if (current === undefined) throw new Error('no policy loaded')
  return decide(current.compiled, request('spiffe://td/ns/a/sa/b', 'GET', '/'))
}

t.test('PolicyStore keeps the last good policy', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-policy-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, V1)
  const results: string[] = []
  const { logger, lines } = capturingLogger()
  const store = new PolicyStore({ file, logger, onResult: r => { results.push(r) } })
  t.equal(store.current, undefined)

  t.equal(store.reload('start'), true)
  t.equal(store.current?.revision, policyRevision(V1))
  t.equal(store.current?.source, file)
  t.equal(decideWith(store).rule, 'v1-rule')
  t.same(results, ['success'])
  t.match(lines.at(-1), { event: 'policy.loaded', trigger: 'start', revision: policyRevision(V1), level: 30 })

  t.equal(store.reload('sighup'), true, 'the same file again')
  t.same(results, ['success', 'unchanged'])
  t.equal(store.current?.revision, policyRevision(V1))

  writeFileSync(file, INVALID)
  t.equal(store.reload('sighup'), false, 'an invalid file is refused')
  t.equal(store.current?.revision, policyRevision(V1), 'the revision is unchanged')
  t.equal(decideWith(store).rule, 'v1-rule', 'the last good policy still decides')
  t.same(results, ['success', 'unchanged', 'invalid'])
  const failed = lines.at(-1)!
  t.match(failed, { level: 50, event: 'policy.reload_failed', code: 'GH_POLICY_INVALID', trigger: 'sighup', keptRevision: policyRevision(V1) })
  t.same(failed.problems, [`${file}:5:5: rules[0]: unknown key "method" (expected one of name, mode, from, methods, paths, ports)`], 'the problem list, with the file name')

  writeFileSync(file, V2)
  t.equal(store.reload('sighup'), true)
  t.equal(store.current?.revision, policyRevision(V2), 'a valid new file replaces it')
  t.not(policyRevision(V2), policyRevision(V1))
  t.equal(decideWith(store).rule, 'v2-rule')
  t.same(results, ['success', 'unchanged', 'invalid', 'success'])

  unlinkSync(file)
  t.equal(store.reload('file-change'), false, 'a deleted file is refused')
  t.equal(store.current?.revision, policyRevision(V2), 'the last good one is kept')
  t.equal(decideWith(store).rule, 'v2-rule')
  t.same(results, ['success', 'unchanged', 'invalid', 'success', 'invalid'])
  t.match(lines.at(-1), { level: 50, event: 'policy.reload_failed', code: 'GH_POLICY_UNREADABLE', trigger: 'file-change', keptRevision: policyRevision(V2) })
  t.equal(lines.filter(l => l.event === 'policy.reload_failed').length, 2)
})

t.test('PolicyStore with no good policy yet', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-policy-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, 'version: 2\nrules: []\n')
  const { logger, lines } = capturingLogger()
  const store = new PolicyStore({ file, logger })
  t.equal(store.reload('start'), false)
  t.equal(store.current, undefined)
  t.match(lines.at(-1), { event: 'policy.reload_failed', code: 'GH_POLICY_INVALID', keptRevision: null })
  t.same(lines.at(-1)?.problems, [`${file}:1:10: version: expected 1`])
})

t.test('PolicyStore.watchFile picks up a change', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-policy-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, V1)
  const results: string[] = []
  const store = new PolicyStore({ file, logger: silentLogger, onResult: r => { results.push(r) } })
  t.teardown(() => { store.stop() })
  t.equal(store.reload('start'), true)
  store.watchFile(50)
  await sleep(200) // let the first poll take its baseline

  const waitFor = async (what: string, cond: () => boolean, timeoutMs = 1000): Promise<void> => {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      if (Date.now() > deadline) { t.fail(`${what}: not seen within ${timeoutMs} ms`); return }
      await sleep(10)
    }
    t.pass(what)
  }

  writeFileSync(file, V2)
  await waitFor('a valid change is loaded', () => store.current?.revision === policyRevision(V2))
  t.equal(decideWith(store).rule, 'v2-rule')

  writeFileSync(file, INVALID)
  await waitFor('an invalid change is reported', () => results.includes('invalid'))
  t.equal(store.current?.revision, policyRevision(V2), 'and not applied')

  writeFileSync(file, V3)
  await waitFor('a valid change after an invalid one is loaded', () => store.current?.revision === policyRevision(V3))
  t.equal(decideWith(store).rule, 'v3-rule')
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
