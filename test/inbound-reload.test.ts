import t from 'tap'
import { appendFileSync, writeFileSync, renameSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { TLSSocket } from 'node:tls'
import { startMesh, Pki as MeshPki, type Mesh } from './helpers/mesh.ts'
import { policyRevision } from '../src/policy/load.ts'
import { clientTls, openTls, responseReader, tlsAttempt, scrapeMetrics, metricValue, statusOf } from './helpers/inbound-probe.ts'
import { waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// Static identity, trust bundle and policy files are reloaded while the sidecar serves: a good new
// file takes effect for new connections without dropping open ones, a bad one is logged, counted and
// ignored (the last good material keeps serving).

const CALLER = 'spiffe://example.org/ns/client/sa/caller'
const SERVER_PATH = '/ns/server/sa/payments'
const fixedApp = (_req: IncomingMessage, res: ServerResponse): void => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 }); res.end('ok') }
const GET = (path: string): string => `GET ${path} HTTP/1.1\r\nhost: gatehouse.test\r\n\r\n`
const CLOSE = (path: string): string => `GET ${path} HTTP/1.1\r\nhost: gatehouse.test\r\nconnection: close\r\n\r\n`
const RELOADS = 'gatehouse_credential_reloads_total'

/** Replaces a file in one step (write aside, then rename), so a poll never sees it half-written. */
function replaceFile (path: string, content: string): void {
  writeFileSync(`${path}.tmp`, content, { mode: 0o600 })
  renameSync(`${path}.tmp`, path)
}

async function reloads (mesh: Mesh, labels: Record<string, string>): Promise<number> {
  return metricValue(await scrapeMetrics(mesh), RELOADS, labels)
}

const serverSerial = (mesh: Mesh): string => mesh.sidecar.credentials.current!.leaf.serialHex

t.test('a new identity is picked up from the cert/key files; open connections keep working', async t => {
  const mesh = await startMesh(t, { appHandler: fixedApp })
  const oldSerial = serverSerial(mesh)
  t.equal(oldSerial, new X509Certificate(mesh.server.chainPem).serialNumber.toLowerCase(), 'serving the mesh server SVID')

  const kept: TLSSocket = await openTls(clientTls(mesh))
  t.teardown(() => { kept.destroy() })
  kept.on('error', () => {})
  let keptClosed = false
  kept.on('close', () => { keptClosed = true })
  const next = responseReader(kept)
  kept.write(GET('/before'))
  t.equal((await next()).status, 200, 'keep-alive connection served before the reload')
  t.equal(kept.getPeerCertificate().serialNumber.toLowerCase(), oldSerial)

  const fresh = mesh.pki.issue(SERVER_PATH, 'server-next', 2 * 3_600_000)
  const newSerial = new X509Certificate(fresh.chainPem).serialNumber.toLowerCase()
  // Key first, then certificate. The two files cannot change in one step, so a poll between the two
  // renames may see a mismatched pair and reject it; the next poll sees the complete pair.
  replaceFile(mesh.server.key, fresh.keyPem)
  replaceFile(mesh.server.cert, fresh.chainPem)
  await waitFor(() => serverSerial(mesh) === newSerial, 5000, 'the new certificate to be loaded')
  t.pass('new serial loaded')
  t.equal(mesh.sidecar.credentials.current!.id.toString(), `spiffe://example.org${SERVER_PATH}`, 'same identity')
  t.ok(mesh.logs.some(l => l.event === 'identity.loaded' && l.serial === newSerial), 'identity.loaded logged with the new serial')

  kept.write(GET('/after'))
  t.equal((await next()).status, 200, 'the connection opened before the reload still works')
  t.equal(keptClosed, false, 'and was not closed')
  t.equal(kept.getPeerCertificate().serialNumber.toLowerCase(), oldSerial, '(it keeps the certificate it was handshaken with)')

  const attempt = await tlsAttempt(clientTls(mesh), CLOSE('/new-connection'))
  t.equal(statusOf(attempt.response), 200, 'a new connection is served')
  t.equal(attempt.serverSerial?.toLowerCase(), newSerial, 'and sees the new certificate')
  t.same(mesh.app.seen.map(s => s.url), ['/before', '/after', '/new-connection'])
  t.equal(mesh.decisions.at(-1)?.callee, `spiffe://example.org${SERVER_PATH}`)

  const text = await scrapeMetrics(mesh)
  t.ok(metricValue(text, RELOADS, { what: 'identity', result: 'success' }) >= 1, 'identity reload counted as success')
  const leafExpiry = (await mesh.sidecar.metrics.certExpiry.get()).values.filter(v => v.labels.cert === 'leaf').map(v => v.value)
  t.same(leafExpiry, [new X509Certificate(fresh.chainPem).validToDate.getTime() / 1000], 'the leaf expiry gauge follows the new certificate')
})

t.test('a broken cert file is rejected: the old identity stays, requests keep working, counted as invalid', async t => {
  const mesh = await startMesh(t, { appHandler: fixedApp })
  const oldSerial = serverSerial(mesh)
  const other = new MeshPki(tempDir(t), 'example.org')
  const cases: Array<{ what: string, write: () => void, reason: RegExp }> = [
    { what: 'garbage', write: () => { replaceFile(mesh.server.cert, 'this is not a certificate\n') }, reason: /no certificate/ },
    {
      what: 'a certificate whose key is not the key file\'s',
      write: () => { replaceFile(mesh.server.cert, mesh.pki.issue(SERVER_PATH, 'server-wrong-key').chainPem) },
      reason: /does not match/
    },
    {
      what: 'an SVID from a CA the bundle does not trust',
      write: () => { const s = other.issue(SERVER_PATH, 'server-stranger'); replaceFile(mesh.server.key, s.keyPem); replaceFile(mesh.server.cert, s.chainPem) },
      reason: /not signed by an authority/
    }
  ]
  let n = 0
  for (const c of cases) {
    n++
    c.write()
    await waitFor(async () => await reloads(mesh, { what: 'identity', result: 'invalid' }) >= n, 5000, `the ${c.what} file to be rejected`)
    t.equal(serverSerial(mesh), oldSerial, `${c.what}: the old identity stays`)
    t.ok(mesh.logs.some(l => l.event === 'identity.reload_failed' && l.level === 50 && c.reason.test(String(l.reason))), `${c.what}: identity.reload_failed logged (${c.reason})`)
    const attempt = await tlsAttempt(clientTls(mesh), CLOSE(`/after-${n}`))
    t.equal(statusOf(attempt.response), 200, `${c.what}: requests keep working`)
    t.equal(attempt.serverSerial?.toLowerCase(), oldSerial, `${c.what}: served with the old certificate`)
  }
  t.equal(await reloads(mesh, { what: 'identity', result: 'success' }), 0, 'no identity reload counted as success')
  t.equal(mesh.app.seen.length, cases.length)
})

t.test('bundle rotation: a second root in the bundle file lets its clients in; a broken bundle keeps the old one', async t => {
  const mesh = await startMesh(t)
  const bundleFile = mesh.pki.bundleFile
  const second = new MeshPki(tempDir(t), 'example.org')
  const stranger = second.issue('/ns/client/sa/caller', 'second-ca-client')
  const refusedAs = async (reason: string): Promise<number> => metricValue(await scrapeMetrics(mesh), 'gatehouse_tls_handshake_failures_total', { reason })

  const before = await tlsAttempt(clientTls(mesh, stranger), CLOSE('/before'))
  t.equal(before.response, '', 'a client of the second CA is refused before the rotation')
  await waitFor(async () => await refusedAs('unknown-ca') === 1, 3000, 'the unknown-ca refusal to be counted')

  replaceFile(bundleFile, mesh.pki.ca.bundlePem + second.ca.bundlePem)
  await waitFor(() => mesh.sidecar.credentials.bundle?.authoritiesFor('example.org').length === 2, 5000, 'the two-root bundle to be loaded')
  t.pass('two roots for example.org')
  t.equal(await reloads(mesh, { what: 'bundle', result: 'success' }), 1, 'bundle reload counted')
  t.ok(mesh.logs.some(l => l.event === 'bundle.loaded'), 'bundle.loaded logged')
  const admitted = await tlsAttempt(clientTls(mesh, stranger), CLOSE('/rotated'))
  t.equal(statusOf(admitted.response), 200, 'the second CA\'s client is served after the bundle update')
  t.match(mesh.decisions.at(-1), { decision: 'allow', caller: CALLER, path: '/rotated' })
  const original = await tlsAttempt(clientTls(mesh), CLOSE('/original'))
  t.equal(statusOf(original.response), 200, 'the first CA\'s client still is')

  replaceFile(bundleFile, 'garbage\n')
  await waitFor(async () => await reloads(mesh, { what: 'bundle', result: 'invalid' }) === 1, 5000, 'the broken bundle to be rejected')
  t.ok(mesh.logs.some(l => l.event === 'bundle.reload_failed' && l.level === 50), 'bundle.reload_failed logged')
  t.equal(mesh.sidecar.credentials.bundle?.authoritiesFor('example.org').length, 2, 'the two-root bundle stays')
  const still = await tlsAttempt(clientTls(mesh, stranger), CLOSE('/still'))
  t.equal(statusOf(still.response), 200, 'the second CA\'s client is still served')

  // A bundle that no longer holds the root of the sidecar's own certificate would strand it: refused too.
  replaceFile(bundleFile, second.ca.bundlePem)
  await waitFor(async () => await reloads(mesh, { what: 'bundle', result: 'invalid' }) === 2, 5000, 'the bundle without our root to be rejected')
  t.equal(mesh.sidecar.credentials.bundle?.authoritiesFor('example.org').length, 2, 'a bundle that does not verify our own SVID is not installed')

  // Rotating the second root out again: its clients are refused.
  replaceFile(bundleFile, mesh.pki.ca.bundlePem)
  await waitFor(() => mesh.sidecar.credentials.bundle?.authoritiesFor('example.org').length === 1, 5000, 'the one-root bundle to be loaded')
  const after = await tlsAttempt(clientTls(mesh, stranger), CLOSE('/removed'))
  t.equal(after.response, '', 'once its root is removed, the second CA\'s client is refused again')
  await waitFor(async () => await refusedAs('unknown-ca') === 2, 3000, 'the second unknown-ca refusal to be counted')
  t.same(mesh.app.seen.map(s => s.url), ['/rotated', '/original', '/still'], 'no refused request reached the app')
})

t.test('policy reload: a changed file applies, an invalid one is ignored, SIGHUP reloads on demand', async t => {
  const mesh = await startMesh(t)
  const allowed = await mesh.request('/v1/items')
  t.equal(allowed.status, 200)
  const r1 = mesh.sidecar.policy.current!.revision
  t.equal(mesh.decisions.at(-1)?.policyRevision, r1)

  replaceFile(mesh.policyFile, `version: 1
rules:
  - name: client-all
    from: ["${CALLER}"]
deny:
  - name: block-caller
    from: ["${CALLER}"]
`)
  await waitFor(() => mesh.sidecar.policy.current?.revision !== r1, 5000, 'the deny policy to be loaded')
  const r2 = mesh.sidecar.policy.current!.revision
  const denied = await mesh.request('/v1/items')
  t.equal(denied.status, 403, 'the new policy denies')
  t.match(mesh.decisions.at(-1), { decision: 'deny', rule: 'block-caller', reason: 'deny-rule', status: 403, policyRevision: r2 }, 'decision line names the new revision')
  t.not(r2, r1)
  t.ok(mesh.logs.some(l => l.event === 'policy.loaded' && l.trigger === 'file-change' && l.revision === r2), 'policy.loaded logged')
  t.equal(mesh.app.seen.length, 1, 'the denied request never reached the app')

  replaceFile(mesh.policyFile, 'version: 1\nrules:\n  - name: broken\n    from: ["not-a-spiffe-id"]\n')
  await waitFor(async () => metricValue(await scrapeMetrics(mesh), 'gatehouse_policy_reloads_total', { result: 'invalid' }) === 1, 5000, 'the invalid policy to be counted')
  t.match(mesh.logs.find(l => l.event === 'policy.reload_failed'), { level: 50, code: 'GH_POLICY_INVALID', keptRevision: r2 }, 'rejection logged with the revision kept')
  t.equal(mesh.sidecar.policy.current!.revision, r2, 'the last good policy stays')
  const stillDenied = await mesh.request('/v1/items')
  t.equal(stillDenied.status, 403, 'and keeps deciding')
  t.equal(mesh.decisions.at(-1)?.policyRevision, r2)
  const text = await scrapeMetrics(mesh)
  t.equal(metricValue(text, 'gatehouse_policy_reloads_total', { result: 'success' }), 2, 'start + one good reload')

  // SIGHUP (the CLI calls reloadPolicy): with the file watcher stopped, a change applies only on demand.
  mesh.sidecar.policy.stop()
  replaceFile(mesh.policyFile, `version: 1\nrules:\n  - name: caller-again\n    from: ["${CALLER}"]\n`)
  await new Promise(resolve => setTimeout(resolve, 500)) // a watcher would have picked the change up by now
  t.equal(mesh.sidecar.policy.current!.revision, r2, 'not picked up without the watcher')
  t.equal(mesh.sidecar.reloadPolicy('SIGHUP'), true, 'reloadPolicy(SIGHUP) loads the file')
  const r3 = mesh.sidecar.policy.current!.revision
  t.not(r3, r2)
  t.ok(mesh.logs.some(l => l.event === 'policy.loaded' && l.trigger === 'SIGHUP' && l.revision === r3), 'policy.loaded logged with trigger SIGHUP')
  const allowedAgain = await mesh.request('/v1/items')
  t.equal(allowedAgain.status, 200, 'the reloaded policy allows again')
  t.match(mesh.decisions.at(-1), { decision: 'allow', rule: 'caller-again', policyRevision: r3 })

  replaceFile(mesh.policyFile, 'version: 2\n')
  t.equal(mesh.sidecar.reloadPolicy('SIGHUP'), false, 'an invalid file on SIGHUP is refused')
  t.equal(mesh.sidecar.policy.current!.revision, r3, 'and the current policy stays')
  t.match(mesh.logs.filter(l => l.event === 'policy.reload_failed').at(-1), { trigger: 'SIGHUP', keptRevision: r3 })
  t.equal(mesh.app.seen.length, 2)
})

// A policy edited in place. The poll interval is the settle window: a change applies once two
// consecutive polls saw the same file. 500 ms (not the usual 100) leaves a loaded machine time to
// write the next part, and to send a request, before the poll after the one that saw the first part.
const SETTLE_TEST_LIMITS = { reloadIntervalMs: 500 }
const READS_ONLY = `version: 1
rules:
  - name: client-reads
    from: ["${CALLER}"]
    paths: ["/v1/**"]
`
const loadedRevisions = (mesh: Mesh): string[] => mesh.logs.filter(l => l.event === 'policy.loaded').map(l => String(l.revision))
/** The sidecar has seen `text` in the file: applied it (what happened before settling), or is waiting for it to settle. */
const sawFile = (mesh: Mesh, text: string): boolean => {
  const rev = policyRevision(text)
  return mesh.sidecar.policy.current?.revision === rev || mesh.logs.some(l => l.event === 'policy.change_settling' && l.revision === rev)
}

t.test('a policy written in place in two parts is never applied half-written', async t => {
  const mesh = await startMesh(t, { policy: READS_ONLY, sidecar: SETTLE_TEST_LIMITS })
  const start = mesh.sidecar.policy.current!.revision
  t.equal((await mesh.request('/admin/users')).status, 403, 'before: /admin is not allowed (no rule matches)')
  // The allow rules first: on its own a valid policy, which allows /admin...
  const allowAll = `version: 1
rules:
  - name: client-all
    from: ["${CALLER}"]
`
  // ...until the deny rules that follow are written.
  const denyAdmin = `deny:
  - name: no-admin
    from: ["${CALLER}"]
    paths: ["/admin/**"]
`
  writeFileSync(mesh.policyFile, allowAll)
  await waitFor(() => sawFile(mesh, allowAll), 5000, 'a poll to see the half-written file')
  t.equal((await mesh.request('/admin/users')).status, 403, 'between the two writes, /admin is still denied')
  appendFileSync(mesh.policyFile, denyAdmin)
  const final = policyRevision(allowAll + denyAdmin)
  await waitFor(() => mesh.sidecar.policy.current?.revision === final, 5000, 'the complete policy to be applied')
  t.same(loadedRevisions(mesh), [start, final], 'the only policies ever applied: the first one and the complete one')
  t.equal((await mesh.request('/admin/users')).status, 403, 'after: /admin is denied by the deny rule')
  t.match(mesh.decisions.at(-1), { decision: 'deny', rule: 'no-admin', policyRevision: final })
  t.equal((await mesh.request('/v1/items')).status, 200, 'and the rest is allowed')
  t.notOk(mesh.decisions.some(d => d.path === '/admin/users' && d.decision === 'allow'), 'no request to /admin was ever allowed')
  t.notOk(mesh.app.seen.some(s => s.url.startsWith('/admin')), 'none reached the app')
})

t.test('a policy file that keeps changing is applied once it stops', async t => {
  const mesh = await startMesh(t, { policy: READS_ONLY, sidecar: SETTLE_TEST_LIMITS })
  const start = mesh.sidecar.policy.current!.revision
  const version = (n: number): string => `${READS_ONLY}  - name: extra-${n}\n    from: ["${CALLER}"]\n    paths: ["/extra/${n}"]\n`
  // Each poll sees a different file: a new version is written as soon as one is seen. The first is
  // written right after the start, before the watcher's first poll: it must not be taken for the
  // file as loaded at start.
  const N = 4
  for (let n = 1; n <= N; n++) {
    writeFileSync(mesh.policyFile, version(n))
    await waitFor(() => sawFile(mesh, version(n)), 5000, `a poll to see version ${n}`)
    if (n < N) t.equal(mesh.sidecar.policy.current!.revision, start, `version ${n}: still changing, not applied`)
  }
  const last = policyRevision(version(N))
  await waitFor(() => mesh.sidecar.policy.current?.revision === last, 5000, 'the last version to be applied once the file is stable')
  t.same(loadedRevisions(mesh), [start, last], 'none of the versions in between was applied')
  t.ok(mesh.logs.some(l => l.event === 'policy.change_settling' && l.level === 20 && l.revision === last), 'waiting for a change to settle is logged at debug level')
  t.equal((await mesh.request(`/extra/${N}`)).status, 200, 'the last version decides')
})
