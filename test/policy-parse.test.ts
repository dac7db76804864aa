import t, { type Test } from 'tap'
import { parsePolicy, policyRevision } from '../src/policy/load.ts'
import { compilePolicy } from '../src/policy/compile.ts'
import { matchSegments, callerPatternProblem, pathPatternProblem } from '../src/policy/patterns.ts'
import { decide } from '../src/policy/decide.ts'
import { normalizeTarget } from '../src/policy/normalize.ts'
import { PolicyInvalidError, GatehouseError } from '../src/errors.ts'
import { ANNOTATED_EXAMPLE, request } from './helpers/policy-facts.ts'

// The policy file (docs/policy.md), parsing and validation: the annotated example and its revision
// (a hash of the exact bytes), caller and path patterns, and validation with file:line:col for every
// kind of problem. Matching semantics: policy-decide.test.ts; the store: policy-store.test.ts.

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
