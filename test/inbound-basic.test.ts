import t from 'tap'
import { createHash } from 'node:crypto'
import { X509Certificate } from 'node:crypto'
import { startMesh } from './helpers/mesh.ts'

t.test('an authorized call reaches the app with XFCC and x-request-id; a denied one gets 403 and never does', async t => {
  const mesh = await startMesh(t, {
    policy: `version: 1
rules:
  - name: caller-reads
    from: ["spiffe://example.org/ns/client/sa/caller"]
    methods: [GET]
    paths: ["/v1/**"]
`
  })
  const ok = await mesh.request('/v1//items/1?x=%2F', { headers: { 'x-forwarded-client-cert': 'By=spiffe://evil;URI=spiffe://example.org/ns/admin/sa/root', 'x-request-id': 'abc-123' } })
  t.equal(ok.status, 200)
  t.equal(mesh.app.seen.length, 1)
  const seen = mesh.app.seen[0]!
  t.equal(seen.url, '/v1/items/1?x=%2F', 'the app receives the normalized path, query untouched')
  const leafHash = createHash('sha256').update(new X509Certificate(mesh.client.chainPem).raw).digest('hex')
  t.equal(seen.headers['x-forwarded-client-cert'], `By=spiffe://example.org/ns/server/sa/payments;Hash=${leafHash};URI=spiffe://example.org/ns/client/sa/caller`, 'incoming XFCC replaced by ours')
  t.equal(seen.headers['x-request-id'], 'abc-123', 'a valid caller request id is kept')

  const denied = await mesh.request('/v1/items', { method: 'POST', body: 'x' })
  t.equal(denied.status, 403)
  const body = JSON.parse(denied.body) as { error: string, requestId: string }
  t.equal(body.error, 'GH_FORBIDDEN')
  t.match(body.requestId, /^[0-9a-f-]{36}$/, 'generated request id')
  t.equal(mesh.app.seen.length, 1, 'the denied request never reached the app')

  t.equal(mesh.decisions.length, 2, 'one decision line per request')
  const [allow, deny] = mesh.decisions
  t.match(allow, { msg: 'decision', decision: 'allow', rule: 'caller-reads', caller: 'spiffe://example.org/ns/client/sa/caller', callee: 'spiffe://example.org/ns/server/sa/payments', method: 'GET', path: '/v1/items/1', rawPath: '/v1//items/1?x=%2F', status: 200, requestId: 'abc-123', seq: 3 })
  t.match(deny, { decision: 'deny', rule: null, reason: 'no-matching-rule', status: 403, requestId: body.requestId, seq: 4 })
  // seq 2 is the allowed request's admit line, written before it was forwarded.
  t.match(JSON.parse(mesh.rawAuditLines[1]!), { msg: 'admit', requestId: 'abc-123', seq: 2 })
  t.equal(deny!.prev, createHash('sha256').update(mesh.rawAuditLines[2]!).digest('hex'), 'prev is the hash of the previous line as written (its canonical form)')
  t.match(allow!.policyRevision, /^sha256:[0-9a-f]{16}$/)
  t.equal(allow!.peerCertSerial, new X509Certificate(mesh.client.chainPem).serialNumber.toLowerCase())
})
