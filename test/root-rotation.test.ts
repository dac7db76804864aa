import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { X509Certificate } from 'node:crypto'
import { rotateRoot } from '../src/ca/root-rotation.ts'
import { pemToDers } from '../src/x509/certificate.ts'
import { tlsAttempt, statusOf } from './helpers/inbound-probe.ts'
import { startCaMesh, startLoad } from './helpers/ca-mesh.ts'
import type { Workload } from './helpers/mesh.ts'
import { sleep, waitFor } from './helpers/wait.ts'
import { replaceFile } from './helpers/files.ts'

// Staged root rotation (`gatehouse ca rotate-root`) under constant A -> B load, end to end:
//   prepare   new root added to the CA bundle; the sidecars learn it from the CA at their next
//             renewal (their --trust-bundle file is a copy the test leaves stale until the end)
//   activate  one leaf TTL later: leaves are now issued under the new root
//   retire    one leaf TTL later: the old root leaves the CA bundle
// Not one request may fail, and at the end both sidecars hold leaves that chain to the new root.

const LEAF_TTL_MS = 3000
const TD = 'example.org'
const OUTSIDER = 'spiffe://example.org/ns/c/sa/old-root-holder'

const serialOf = (pem: string): string => new X509Certificate(pem).serialNumber.toLowerCase().replace(/^0+/, '')
const norm = (hex: string): string => hex.toLowerCase().replace(/^0+/, '')
const roots = (s: Workload): string[] => (s.sidecar.credentials.bundle?.authoritiesFor(TD) ?? []).map(c => norm(c.serialHex))
/** The issuer certificate (second in the chain) of the sidecar's current SVID. */
const issuerOf = (s: Workload): X509Certificate => new X509Certificate(pemToDers(s.sidecar.credentials.current!.chainPem)[1]!)

t.test('prepare, activate, retire under load: zero failed requests, every leaf under the new root', async t => {
  const mesh = await startCaMesh(t, { leafTtlMs: LEAF_TTL_MS, caReloadIntervalMs: 200, bundle: 'copy' })
  const { ca, a, b } = mesh
  const oldRootPem = readFileSync(join(ca.dir, 'root.pem'), 'utf8')
  const oldRoot = new X509Certificate(oldRootPem)
  // A leaf under the old root, issued now and valid long past the rotation: the probe for "the old
  // root is no longer trusted".
  const oldLeaf = ca.issue(OUTSIDER, 120_000)
  const reloads = (): Array<Record<string, any>> => ca.logs.filter(l => l.event === 'ca.reloaded')
  t.equal((await mesh.call('/warm-up')).status, 200, 'A -> B works')

  const load = startLoad(mesh, 4)
  t.teardown(async () => { await load.stop() })
  await sleep(500) // the load runs for a while before prepare

  // prepare
  const prepared = Date.now()
  t.comment(rotateRoot(ca.dir, 'prepare', { leafTtlMs: LEAF_TTL_MS }))
  const newRootPem = readFileSync(join(ca.dir, 'root-next.pem'), 'utf8')
  const newRoot = new X509Certificate(newRootPem)
  await waitFor(() => reloads().some(l => l.roots.length === 2), 5000, 'the CA to serve both roots')
  await waitFor(() => [a, b].every(s => roots(s).includes(serialOf(newRootPem))), 5000, 'both sidecars to trust the new root (from the CA, at renewal)')
  t.pass('after prepare both sidecars trust both roots, learnt from the CA')
  t.same(readFileSync(a.bundleFile, 'utf8'), oldRootPem, 'their --trust-bundle file still holds only the old root')
  await waitFor(() => Date.now() - prepared > LEAF_TTL_MS + 300, 10_000, 'one leaf TTL')

  // activate
  const activated = Date.now()
  t.comment(rotateRoot(ca.dir, 'activate', { leafTtlMs: LEAF_TTL_MS }))
  const newIssuer = new X509Certificate(readFileSync(join(ca.dir, 'issuer.pem'), 'utf8'))
  t.ok(newIssuer.checkIssued(newRoot) && newIssuer.verify(newRoot.publicKey), 'the new issuer is signed by the new root')
  await waitFor(() => reloads().some(l => norm(l.issuerSerial as string) === norm(newIssuer.serialNumber)), 5000, 'the CA to issue under the new issuer')
  await waitFor(() => [a, b].every(s => issuerOf(s).serialNumber === newIssuer.serialNumber), 5000, 'both sidecars to hold a leaf under the new root')
  t.pass('both sidecars renewed under the new root')
  const before = await tlsAttempt({ host: '127.0.0.1', port: b.sidecar.inbound.port, cert: oldLeaf.chainPem, key: oldLeaf.keyPem, ca: oldRootPem + newRootPem, checkServerIdentity: () => undefined }, 'GET /old HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n')
  t.equal(statusOf(before.response), 403, 'between activate and retire a leaf under the old root is still accepted by B (then denied by policy)')
  await waitFor(() => Date.now() - activated > LEAF_TTL_MS + 300, 10_000, 'one leaf TTL')

  // retire
  const retired = Date.now()
  t.comment(rotateRoot(ca.dir, 'retire', { leafTtlMs: LEAF_TTL_MS }))
  await waitFor(() => reloads().some(l => l.roots.length === 1 && norm(l.roots[0] as string) === serialOf(newRootPem)), 5000, 'the CA to serve only the new root')
  await waitFor(() => [a, b].every(s => s.events('identity.rotated').some(l => (l.time as number) > retired + 300)), 5000, 'both sidecars to renew after retire')
  await sleep(1500) // the load runs on for a while under the new root alone
  const result = await load.stop()

  const rotations = { a: a.events('identity.rotated').filter(l => (l.time as number) > prepared).length, b: b.events('identity.rotated').filter(l => (l.time as number) > prepared).length }
  t.comment(`requests: ${result.ok + result.failed} total, ${result.failed} failed ${JSON.stringify(result.byKind)}; rotations since prepare: A ${rotations.a}, B ${rotations.b}; ${Date.now() - prepared} ms from prepare to the end`)
  for (const f of result.failures) t.comment(`failure: ${f}`)
  t.ok(result.ok > 100, `${result.ok} requests went through during the rotation`)
  t.equal(result.failed, 0, 'zero failed requests through prepare, activate and retire')
  t.equal(a.events('identity.renewal_failed').length + b.events('identity.renewal_failed').length, 0, 'no renewal failed')

  // The end state: leaves under the new root, the old root out of the CA bundle.
  for (const s of [a, b]) {
    const issuer = issuerOf(s)
    t.ok(issuer.checkIssued(newRoot) && issuer.verify(newRoot.publicKey), `${s.name}: the issuer of its current leaf is signed by the new root (CA dir root.pem)`)
    t.notOk(issuer.verify(oldRoot.publicKey), `${s.name}: not by the old one`)
    t.ok(new X509Certificate(s.sidecar.credentials.current!.chainPem).checkIssued(issuer), `${s.name}: its leaf is signed by that issuer`)
  }
  const caRoot = readFileSync(join(ca.dir, 'root.pem'), 'utf8')
  t.equal(caRoot, newRootPem, 'the CA dir root.pem is the new root')
  const bundle = readFileSync(join(ca.dir, 'bundle.pem'), 'utf8')
  t.same(pemToDers(bundle).map(d => new X509Certificate(d).serialNumber), [newRoot.serialNumber], 'the CA bundle holds the new root only')
  t.notOk(existsSync(join(ca.dir, 'root-previous.pem')), 'the old root certificate is gone from the CA dir')

  // The operator updates the mounted bundle (the stale copy); then the old root is trusted nowhere.
  for (const s of [a, b]) replaceFile(s.bundleFile, bundle, 0o644)
  await waitFor(() => [a, b].every(s => roots(s).length === 1 && roots(s)[0] === serialOf(newRootPem)), 5000, 'both sidecars to drop the old root')
  t.pass('both sidecars now trust the new root only')
  const after = await tlsAttempt({ host: '127.0.0.1', port: b.sidecar.inbound.port, cert: oldLeaf.chainPem, key: oldLeaf.keyPem, ca: newRootPem, checkServerIdentity: () => undefined }, 'GET /old HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n')
  t.equal(statusOf(after.response), undefined, 'a leaf under the old root is refused at the handshake')
  t.ok(b.events('tls.refused').some(l => l.reason === 'unknown-ca' || l.reason === 'untrusted'), `B logged the refusal (${JSON.stringify(b.events('tls.refused').map(l => l.reason))})`)
  t.equal((await mesh.call('/after')).status, 200, 'A -> B still works')
})
