import t from 'tap'
import { createHash, X509Certificate } from 'node:crypto'
import { startCaMesh, A_ID, B_ID } from './helpers/ca-mesh.ts'

// Two sidecars whose identities were both issued by a running CA (nothing handled by a person): the
// app behind A calls http://b.internal through A's outbound listener, and B's app sees the call
// arrive with A's SPIFFE ID in x-forwarded-client-cert.

t.test('an A -> B call through the outbound listener reaches B\'s app with XFCC URI = A\'s CA-issued ID', async t => {
  const mesh = await startCaMesh(t, { leafTtlMs: 60_000 })
  const res = await mesh.call('/v1/hello?x=1', { headers: { 'x-forwarded-client-cert': 'URI=spiffe://example.org/ns/evil/sa/forged' } })
  t.equal(res.status, 200, 'the call succeeds')
  t.equal(res.body, 'ok')
  t.equal(mesh.b.app.seen.length, 1, 'B\'s app got exactly one request')
  const seen = mesh.b.app.seen[0]!
  t.equal(seen.url, '/v1/hello?x=1', 'origin-form path and query forwarded')
  const aLeaf = new X509Certificate(mesh.a.sidecar.credentials.current!.chainPem)
  const hash = createHash('sha256').update(aLeaf.raw).digest('hex')
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${B_ID};Hash=${hash};URI=${A_ID}`, 'XFCC names A (the hash of A\'s current CA-issued leaf), the forged one is gone')
  t.equal(mesh.a.sidecar.credentials.current!.id.toString(), A_ID, 'A holds the ID its join token named')
  t.equal(mesh.b.sidecar.credentials.current!.id.toString(), B_ID, 'B holds the ID its join token named')
  t.match(mesh.b.decisions.at(-1), { decision: 'allow', caller: A_ID, callee: B_ID, path: '/v1/hello', status: 200 }, 'B logged the allow decision')
})
