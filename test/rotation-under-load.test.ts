import t from 'tap'
import { startCaMesh, startLoad } from './helpers/ca-mesh.ts'
import { sleep } from './helpers/wait.ts'

// Zero-downtime rotation: with a leaf TTL of 3 s both sidecars renew every ~1.5 s, and a constant
// load of A -> B calls (several concurrent keep-alive loops through A's outbound listener into B's
// inbound) must see not one failed request across all those rotations.

const LEAF_TTL_MS = 3000
const LOAD_MS = 12_000
const CONCURRENCY = 6

t.test('a rotation every ~1.5 s under constant A -> B load fails zero requests', async t => {
  const mesh = await startCaMesh(t, { leafTtlMs: LEAF_TTL_MS })
  const warm = await mesh.call('/warm-up')
  t.equal(warm.status, 200, 'A -> B works before the load starts')

  const rotatedBefore = { a: mesh.a.events('identity.rotated').length, b: mesh.b.events('identity.rotated').length }
  const load = startLoad(mesh, CONCURRENCY)
  t.teardown(async () => { await load.stop() })
  await sleep(LOAD_MS) // keeps the load running for LOAD_MS
  const result = await load.stop()
  const rotations = {
    a: mesh.a.events('identity.rotated').length - rotatedBefore.a,
    b: mesh.b.events('identity.rotated').length - rotatedBefore.b
  }
  const renewalFailures = mesh.a.events('identity.renewal_failed').length + mesh.b.events('identity.renewal_failed').length
  t.comment(`requests: ${result.ok + result.failed} total, ${result.ok} ok, ${result.failed} failed ${JSON.stringify(result.byKind)}`)
  t.comment(`rotations during the load: A ${rotations.a}, B ${rotations.b}; renewal failures: ${renewalFailures}`)
  for (const f of result.failures) t.comment(`failure: ${f}`)

  t.ok(result.ok > 100, `a real load went through (${result.ok} requests)`)
  t.equal(result.failed, 0, 'zero failed requests across the rotations')
  t.ok(rotations.a >= 2, `A rotated at least twice under load (${rotations.a})`)
  t.ok(rotations.b >= 2, `B rotated at least twice under load (${rotations.b})`)
  t.equal(renewalFailures, 0, 'no renewal failed')
  t.ok(mesh.a.events('identity.rotated').slice(1).every(l => l.auth === 'svid'), 'A renewed with its current SVID over mTLS')
  t.ok(mesh.b.events('identity.rotated').slice(1).every(l => l.auth === 'svid'), 'B renewed with its current SVID over mTLS')

  // B saw the load from A's successive certificates: the caller serials in its decision log change.
  const serials = new Set(mesh.b.decisions.filter(d => d.decision === 'allow').map(d => d.peerCertSerial as string))
  t.ok(serials.size >= 3, `B served A under ${serials.size} different certificates of A`)
  const odd = mesh.b.decisions.filter(d => d.decision !== 'allow' || d.status !== 200)
  t.same(odd, [], 'every decision B logged is an allow served with 200')
})
