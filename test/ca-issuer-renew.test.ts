import t from 'tap'
import { cpSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto'
import { initCa } from '../src/ca/ca-directory.ts'
import { renewIssuer } from '../src/ca/issuer-renewal.ts'
import { parseCertificate, pemToDers } from '../src/x509/certificate.ts'
import { tlsAttempt, statusOf } from './helpers/inbound-probe.ts'
import { startCaMesh, startLoad, startTestCa, type LogLine } from './helpers/ca-mesh.ts'
import type { Workload } from './helpers/mesh.ts'
import { gatehouseAsync } from './helpers/audit-log.ts'
import { sleep, waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// Issuer renewal (`gatehouse ca issuer renew`) under constant A -> B load, end to end: the CLI
// writes a new issuer under the same root into the directory of a running CA; the CA reloads it at
// its next poll and issues from it; each sidecar moves to it at its next renewal while leaves from
// the old issuer, still held by the other sidecar, stay valid until they expire. Not one request
// may fail from the renewal until the old issuer's last leaf has expired.

const LEAF_TTL_MS = 4000
const DAY = 86_400_000
const OUTSIDER = 'spiffe://example.org/ns/c/sa/old-issuer-holder'

const norm = (hex: string): string => hex.toLowerCase().replace(/^0+/, '')
/** The issuer certificate (second in the chain) of the sidecar's current SVID. */
const issuerOf = (s: Workload): X509Certificate => new X509Certificate(pemToDers(s.sidecar.credentials.current!.chainPem)[1]!)

t.test('renew the issuer of a running CA under load: zero failed requests through the whole overlap', async t => {
  const mesh = await startCaMesh(t, { leafTtlMs: LEAF_TTL_MS, caReloadIntervalMs: 200 })
  const { ca, a, b } = mesh
  const root = new X509Certificate(readFileSync(join(ca.dir, 'root.pem'), 'utf8'))
  const oldIssuer = new X509Certificate(readFileSync(join(ca.dir, 'issuer.pem'), 'utf8'))
  // A leaf from the old issuer, valid long past the renewal: the probe for "still accepted".
  const oldLeaf = ca.issue(OUTSIDER, 120_000)
  const reloads = (): LogLine[] => ca.logs.filter(l => l.event === 'ca.reloaded')
  t.equal((await mesh.call('/warm-up')).status, 200, 'A -> B works')

  const load = startLoad(mesh, 4)
  t.teardown(async () => { await load.stop() })
  await sleep(500) // the load runs for a while before the renewal

  const renewed = Date.now()
  const r = await gatehouseAsync(['ca', 'issuer', 'renew', '--dir', ca.dir])
  t.equal(r.status, 0, `ca issuer renew exits 0 (${r.stderr.trim()})`)
  t.comment(r.stdout.trim())
  const newIssuer = new X509Certificate(readFileSync(join(ca.dir, 'issuer.pem'), 'utf8'))
  t.not(newIssuer.serialNumber, oldIssuer.serialNumber, 'issuer.pem is a new certificate')
  t.ok(newIssuer.checkIssued(root) && newIssuer.verify(root.publicKey), 'signed by the same root')
  t.match(r.stdout, norm(newIssuer.serialNumber), 'the output names the new serial')

  await waitFor(() => reloads().some(l => norm(l.issuerSerial as string) === norm(newIssuer.serialNumber)), 5000, 'the CA to reload the new issuer')
  const reloadedAt = reloads().find(l => norm(l.issuerSerial as string) === norm(newIssuer.serialNumber))!.time as number
  t.equal(ca.logs.filter(l => l.event === 'ca.reload_failed').length, 0, 'the CA never saw a half-written issuer')

  // The overlap: until both have renewed, one sidecar may hold a new leaf and the other an old one.
  let mixed = 0
  await waitFor(() => {
    const moved = [a, b].map(s => issuerOf(s).serialNumber === newIssuer.serialNumber)
    if (moved[0] !== moved[1]) mixed++
    return moved.every(Boolean)
  }, 3 * LEAF_TTL_MS, 'both sidecars to hold a leaf from the new issuer')
  t.pass('both sidecars renewed from the new issuer')
  const probe = await tlsAttempt({ host: '127.0.0.1', port: b.sidecar.inbound.port, cert: oldLeaf.chainPem, key: oldLeaf.keyPem, ca: root.toString(), checkServerIdentity: () => undefined }, 'GET /old HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n')
  t.equal(statusOf(probe.response), 403, 'a leaf from the old issuer is still accepted by B, now on the new issuer (then denied by policy)')

  // Wait out the old issuer's last leaf: every leaf the CA issued before it reloaded.
  const oldLeavesExpire = Math.max(...ca.logs.filter(l => l.event === 'svid.issued' && (l.time as number) <= reloadedAt).map(l => Date.parse(l.notAfter as string)))
  await waitFor(() => Date.now() > oldLeavesExpire + 500, 3 * LEAF_TTL_MS, 'the old issuer\'s last leaf to expire')
  const result = await load.stop()

  t.comment(`requests: ${result.ok + result.failed} total, ${result.failed} failed ${JSON.stringify(result.byKind)}; ${Date.now() - renewed} ms from renew to the end; mixed old/new polls: ${mixed}`)
  for (const f of result.failures) t.comment(`failure: ${f}`)
  t.ok(result.ok > 100, `${result.ok} requests went through during the overlap`)
  t.equal(result.failed, 0, 'zero failed requests from the renewal until the old leaves expired')
  t.equal(a.events('identity.renewal_failed').length + b.events('identity.renewal_failed').length, 0, 'no renewal failed')
  const after = ca.logs.filter(l => l.event === 'svid.issued' && (l.time as number) > reloadedAt)
  t.ok(after.length >= 2, `the CA issued ${after.length} leaves after the reload`)
  for (const s of [a, b]) t.ok(new X509Certificate(s.sidecar.credentials.current!.chainPem).checkIssued(newIssuer), `${s.name}: its leaf is signed by the new issuer`)
  t.equal(ca.logs.filter(l => l.event === 'ca.issuer_expiring').length, 0, 'no expiry warning for a year-long issuer')
  t.equal((await mesh.call('/after')).status, 200, 'A -> B still works')
})

t.test('the CA warns when the issuer expires within 30 days: on reload, at start', async t => {
  const ca = await startTestCa(t, { leafTtlMs: LEAF_TTL_MS, reloadIntervalMs: 200 })
  const warnings = (): LogLine[] => ca.logs.filter(l => l.event === 'ca.issuer_expiring')
  t.equal(warnings().length, 0, 'no warning for a fresh CA')
  await sleep(500) // past the CA's first poll of its directory, which records what it reads
  const renewed = renewIssuer(ca.dir, { ttlMs: 10 * DAY })
  await waitFor(() => warnings().length > 0, 5000, 'an expiry warning after the reload')
  t.match(warnings()[0], { level: 40, cert: 'issuer', serial: renewed.serial, daysLeft: 9, notAfter: renewed.notAfter.toISOString() }, 'names the issuer, its serial and the days left')
  t.match(warnings()[0]!.msg, /gatehouse ca issuer renew/, 'and says what to do')
  await ca.stop()
  await ca.restart()
  t.equal(warnings().length, 2, 'and again when the CA starts')
})

t.test('ca issuer renew: the CLI', async t => {
  const dir = tempDir(t, 'gh-issuer-renew-')
  const caDir = join(dir, 'ca')
  initCa({ dir: caDir, trustDomain: 'example.org', rootTtlMs: 400 * DAY })
  const issuerPem = readFileSync(join(caDir, 'issuer.pem'), 'utf8')
  const oldSerial = parseCertificate(pemToDers(issuerPem)[0]!).serialHex

  const noRootKey = join(dir, 'no-root-key')
  cpSync(caDir, noRootKey, { recursive: true })
  rmSync(join(noRootKey, 'root-key.pem'))
  const r1 = await gatehouseAsync(['ca', 'issuer', 'renew', '--dir', noRootKey])
  t.equal(r1.status, 1, 'no root key: exit 1')
  t.match(r1.stderr, /GH_CA_MISSING: .*root-key\.pem does not exist: renewing the issuer needs the root key; run this where the root key is kept/, 'says the root key is needed, and where to run it')

  const r2 = await gatehouseAsync(['ca', 'issuer', 'renew', '--dir', caDir, '--ttl', '500d'])
  t.equal(r2.status, 1, 'a new issuer outliving the root: exit 1')
  t.match(r2.stderr, /GH_ROTATION_REFUSED: the new issuer would outlive the root: the root expires at .*; rotate the root first \(gatehouse ca rotate-root\), or give a --ttl that ends before the root does/, 'says so, and what to do')
  t.equal(readFileSync(join(caDir, 'issuer.pem'), 'utf8'), issuerPem, 'the issuer is unchanged')
  t.notOk(existsSync(join(caDir, `issuer-${oldSerial}.pem`)), 'and nothing archived')

  const r3 = await gatehouseAsync(['ca', 'issuer', 'renew', '--dir', caDir])
  t.equal(r3.status, 0, `the default --ttl (365d) fits under the root: exit 0 ${r3.stderr}`)
  const issuer = parseCertificate(pemToDers(readFileSync(join(caDir, 'issuer.pem'), 'utf8'))[0]!)
  const root = parseCertificate(pemToDers(readFileSync(join(caDir, 'root.pem'), 'utf8'))[0]!)
  t.ok(issuer.x509.checkIssued(root.x509) && issuer.x509.verify(root.publicKey), 'the new issuer is signed by the root')
  t.same(issuer.profile.basicConstraints?.value, { ca: true, pathLen: 0 }, 'the same profile: a CA that signs leaves only')
  t.ok(Math.abs(issuer.notAfter.getTime() - Date.now() - 365 * DAY) < 120_000, 'valid for 365 days')
  t.same(createPublicKey(createPrivateKey(readFileSync(join(caDir, 'issuer-key.pem')))).export({ type: 'spki', format: 'der' }), issuer.publicKey.export({ type: 'spki', format: 'der' }), 'issuer-key.pem is its key')
  t.equal(statSync(join(caDir, 'issuer-key.pem')).mode & 0o777, 0o600, 'the key is 0600')
  t.equal(readFileSync(join(caDir, `issuer-${oldSerial}.pem`), 'utf8'), issuerPem, 'the old issuer is kept as issuer-SERIAL.pem')
  t.match(r3.stdout, new RegExp(`new issuer serial ${issuer.serialHex}.*\\n[^]*issuer-${oldSerial}\\.pem`), 'the output names the new serial and the archived issuer')
})
