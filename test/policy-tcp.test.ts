import t from 'tap'
import { parsePolicy } from '../src/policy/load.ts'
import { compilePolicy } from '../src/policy/compile.ts'
import { decide, type RequestFacts } from '../src/policy/decide.ts'
import { PolicyInvalidError } from '../src/errors.ts'

// Rules with `ports` (opaque TCP, issue 17): validation, and that HTTP rules never authorize a TCP
// connection nor TCP rules an HTTP request, with deny rules, patterns and audit mode as for HTTP.

const caller = (id: string): RequestFacts['caller'] => {
  const m = /^spiffe:\/\/([^/]+)(\/.*)$/.exec(id)!
  return { id, trustDomain: m[1]!, segments: m[2]!.split('/').slice(1) }
}
const tcp = (id: string, port: number): RequestFacts => ({ caller: caller(id), method: 'TCP', path: '', segments: [], port })
const http = (id: string, method: string, path: string): RequestFacts => ({ caller: caller(id), method, path, segments: path.split('/').slice(1) })
const problems = (text: string): string[] => {
  try { parsePolicy(text, 'p.yaml'); return [] } catch (err) { return (err as PolicyInvalidError).problems }
}

t.test('validation', async t => {
  t.match(problems('version: 1\nrules:\n  - name: mixed\n    from: ["spiffe://td/a"]\n    methods: [GET]\n    ports: [6379]\n'),
    [/^p\.yaml:6:\d+: rules\[0\]\.ports: a rule with ports authorizes opaque TCP connections and cannot also name methods; split it into an HTTP rule and a TCP rule$/])
  t.match(problems('version: 1\ndeny:\n  - name: mixed\n    from: ["spiffe://td/a"]\n    paths: [/x]\n    ports: [5432]\n'), [/deny\[0\]\.ports: .*cannot also name paths/])
  t.match(problems('version: 1\nrules:\n  - name: bad\n    from: ["spiffe://td/a"]\n    ports: [0, 70000, "6379", redis]\n'), [
    /ports: expected a port number from 1 to 65535, got 0/, /got 70000/, /got "6379"/, /got "redis"/])
  t.match(problems('version: 1\nrules:\n  - name: empty\n    from: ["spiffe://td/a"]\n    ports: []\n'), [/ports: expected a non-empty list of TCP port numbers/])
  t.same(problems('version: 1\nrules:\n  - name: ok\n    from: ["spiffe://td/ns/*/sa/app"]\n    ports: [6379, 5432]\n'), [])
})

t.test('decisions', async t => {
  const { policy } = parsePolicy(`version: 1
deny:
  - name: no-stranger-db
    from: ["spiffe://td/ns/shop/sa/stranger"]
    ports: [5432]
rules:
  - name: http-anything
    from: ["spiffe://td/ns/shop/**"]
  - name: db
    from: ["spiffe://td/ns/shop/sa/*"]
    ports: [5432]
  - name: cache-shadow
    mode: audit
    from: ["spiffe://td/ns/shop/sa/api"]
    ports: [6379]
`)
  const p = compilePolicy(policy)
  t.match(decide(p, tcp('spiffe://td/ns/shop/sa/api', 5432)), { decision: 'allow', rule: 'db' }, 'a TCP rule, by caller pattern and port')
  t.match(decide(p, tcp('spiffe://td/ns/shop/sa/api', 6379)), { decision: 'deny', rule: null, reason: 'no-matching-rule', shadowDecision: 'allow', shadowRule: 'cache-shadow' }, 'a rule with no methods or paths (http-anything) does not authorize TCP; the shadow rule would')
  t.match(decide(p, tcp('spiffe://td/ns/shop/sa/stranger', 5432)), { decision: 'deny', rule: 'no-stranger-db', reason: 'deny-rule' }, 'deny rules with ports come first')
  t.match(decide(p, http('spiffe://td/ns/shop/sa/api', 'GET', '/x')), { decision: 'allow', rule: 'http-anything' })
  t.match(decide(p, http('spiffe://td/ns/shop/sa/stranger', 'GET', '/x')), { decision: 'allow', rule: 'http-anything' }, 'a deny rule with ports does not deny HTTP')
  const tcpOnly = compilePolicy(parsePolicy('version: 1\nmode: audit\nrules:\n  - name: db\n    from: ["spiffe://td/ns/shop/sa/api"]\n    ports: [5432]\n').policy)
  t.match(decide(tcpOnly, http('spiffe://td/ns/shop/sa/api', 'GET', '/')), { decision: 'deny', reason: 'no-matching-rule', allowed: true, mode: 'audit' }, 'a TCP rule does not authorize HTTP (audit mode lets it through, logged as deny)')
  t.match(decide(tcpOnly, tcp('spiffe://td/ns/shop/sa/api', 5433)), { decision: 'deny' }, 'another port')
})
