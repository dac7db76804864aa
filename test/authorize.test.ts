import t from 'tap'
import { authorize, type AuthorizeEnv } from '../src/proxy/authorize.ts'
import { parsePolicy } from '../src/policy/load.ts'
import { compilePolicy } from '../src/policy/compile.ts'
import type { PeerIdentity } from '../src/spiffe/peer.ts'
import { errorBody } from '../src/error-body.ts'

// authorize() is the whole authorization stage as a pure function: request facts and the verified
// peer in, a Verdict (refusal or target, with the decision line's fields) out. No socket here.

const policyOf = (yaml: string): AuthorizeEnv['policy'] => ({ compiled: compilePolicy(parsePolicy(yaml).policy), revision: 'sha256:test', source: 'test' })
const POLICY = policyOf(`version: 1
rules:
  - name: orders
    from: ["spiffe://example.org/ns/a/sa/caller"]
    methods: [GET, POST]
    paths: ["/orders/**", "/pkg.Orders/Get"]
deny:
  - name: admin
    from: ["spiffe://example.org/**"]
    paths: ["/admin/**"]
`)
const peer: PeerIdentity = { id: 'spiffe://example.org/ns/a/sa/caller', trustDomain: 'example.org', segments: ['ns', 'a', 'sa', 'caller'], serial: '01', certHash: 'ab'.repeat(32), notAfter: new Date(Date.now() + 3600_000) }
const env: AuthorizeEnv = { peer, policy: POLICY, own: 'spiffe://example.org/ns/b/sa/callee', now: Date.now() }
const facts = (method: string, rawPath: string, extra: Record<string, unknown> = {}): Parameters<typeof authorize>[0] => ({ method, rawPath, requestIdHeader: undefined, ...extra })

t.test('allowed: the normalized target, XFCC and the decision line fields', async t => {
  const v = authorize(facts('GET', '/orders//1/./x?y=%2F', { requestIdHeader: 'req-1' }), env)
  t.ok(v.ok)
  if (!v.ok) return
  t.equal(v.target, '/orders/1/x?y=%2F')
  t.equal(v.xfcc, `By=spiffe://example.org/ns/b/sa/callee;Hash=${'ab'.repeat(32)};URI=${peer.id}`)
  t.match(v.fields, { requestId: 'req-1', decision: 'allow', rule: 'orders', reason: 'allow-rule', caller: peer.id, callee: env.own, method: 'GET', path: '/orders/1/x', rawPath: '/orders//1/./x?y=%2F', policyRevision: 'sha256:test', peerCertSerial: '01', enforced: true })
  const grpc = authorize(facts('POST', '/pkg.Orders/Get'), env)
  t.ok(grpc.ok, 'a gRPC method is a path')
})

t.test('each refusal: status, the body\'s GH_ code, decision line reason', async t => {
  const cases: Array<[string, Parameters<typeof authorize>[0], Partial<AuthorizeEnv>, number, string, RegExp]> = [
    ['no verified peer', facts('GET', '/orders/1'), { peer: undefined }, 403, 'GH_FORBIDDEN', /^no-verified-peer$/],
    ['peer certificate expired', facts('GET', '/orders/1'), { now: peer.notAfter.getTime() + 1 }, 401, 'GH_PEER_CERT_EXPIRED', /^peer-certificate-expired$/],
    ['protocol problem', facts('GET', '/orders/1', { protocolProblem: 'connection-specific header te in HTTP/2' }), {}, 400, 'GH_BAD_REQUEST', /^bad-request: connection-specific/],
    ['bad method', facts('get', '/orders/1'), {}, 400, 'GH_BAD_REQUEST', /^bad-request: method/],
    ['encoded slash', facts('GET', '/orders%2F1'), {}, 400, 'GH_BAD_REQUEST', /^bad-request: encoded slash/],
    ['no policy', facts('GET', '/orders/1'), { policy: undefined }, 503, 'GH_NOT_READY', /^not-ready/],
    ['no identity', facts('GET', '/orders/1'), { own: undefined }, 503, 'GH_NOT_READY', /^not-ready/],
    ['deny rule', facts('GET', '/admin/x'), {}, 403, 'GH_FORBIDDEN', /^deny-rule$/],
    ['dot-segment to a denied path', facts('GET', '/orders/../admin/x'), {}, 403, 'GH_FORBIDDEN', /^deny-rule$/],
    ['method not allowed by the rule', facts('DELETE', '/orders/1'), {}, 403, 'GH_FORBIDDEN', /^no-matching-rule$/],
    ['another caller', facts('GET', '/orders/1'), { peer: { ...peer, id: 'spiffe://example.org/ns/x/sa/y', segments: ['ns', 'x', 'sa', 'y'] } }, 403, 'GH_FORBIDDEN', /^no-matching-rule$/]
  ]
  for (const [name, f, override, status, error, reason] of cases) {
    const v = authorize(f, { ...env, ...override })
    t.notOk(v.ok, `${name}: refused`)
    if (v.ok) continue
    t.equal(v.refusal.status, status, `${name}: ${status}`)
    t.equal(v.refusal.code, error, `${name}: code ${error}`)
    const body = errorBody(v.refusal)
    t.equal(body.error, error, `${name}: body error ${error}`)
    t.ok(body.message.length > 0, `${name}: the body says what happened ("${body.message}")`)
    t.equal(body.requestId, v.fields.requestId, `${name}: the body names the decision line's request id`)
    if (status === 400) t.match(body, { reason: /^(protocol|method|target)$/, message: /connection-specific|upper-case|encoded slash/ }, `${name}: the bad request's reason and what was wrong`)
    else t.notOk('reason' in body, `${name}: no reason in the body (the policy's reasons stay in the decision line)`)
    t.match(v.fields.reason, reason, `${name}: decision line reason`)
    t.equal(v.fields.decision, 'deny', `${name}: logged as deny`)
    if (status === 400 || status === 401) t.equal(v.close, true, `${name}: the connection is not reused`)
  }
})

t.test('audit mode: a deny decision is logged, not enforced; a bad request id is replaced', async t => {
  const audit = policyOf(`version: 1
mode: audit
rules: []
`)
  const v = authorize(facts('GET', '/anything', { requestIdHeader: 'bad id with spaces' }), { ...env, policy: audit })
  t.ok(v.ok, 'audit mode lets it through')
  t.match(v.fields, { decision: 'deny', mode: 'audit', enforced: false, reason: 'no-matching-rule' })
  t.not(v.fields.requestId, 'bad id with spaces')
  t.match(v.fields.requestId, /^[0-9a-f-]{36}$/)
})
