import t, { type Test } from 'tap'
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { createServer as createTlsServer, type ConnectionOptions, type TLSSocket } from 'node:tls'
import type { AddressInfo } from 'node:net'
import { startMesh, Pki as MeshPki, type Mesh, type SvidFiles } from './helpers/mesh.ts'
import { createPki, leafExt, type IssuedCert } from './helpers/openssl-pki.ts'
import { tlsAttempt, clientTls, scrapeMetrics, metricValue, statusOf } from './helpers/inbound-probe.ts'
import { waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// Inbound TLS refusals: a client whose handshake or identity is not acceptable never gets a request
// parsed, let alone forwarded. Each refusal is counted by reason category and logged ('tls.refused').

const FAILURES = 'gatehouse_tls_handshake_failures_total'
const CALLER = 'spiffe://example.org/ns/client/sa/caller'

type T = Test

/** Connects with `opts`, sends a request, and checks the refusal: nothing reached the app, counted once under `reason`, logged. */
async function assertRefused (t: T, mesh: Mesh, opts: ConnectionOptions, reason: string, detail?: RegExp): Promise<void> {
  const before = mesh.app.seen.length
  const attempt = await tlsAttempt(opts)
  t.equal(attempt.response, '', 'no HTTP response: the request was never parsed')
  t.equal(mesh.app.seen.length, before, 'nothing reached the app')
  t.equal(mesh.decisions.length, 0, 'no decision line: the connection never got as far as a request')
  await waitFor(() => mesh.logs.some(l => l.event === 'tls.refused' && l.reason === reason), 3000, `a tls.refused log line with reason ${reason}`)
  const line = mesh.logs.find(l => l.event === 'tls.refused' && l.reason === reason)
  t.match(line, { level: 40, remote: '127.0.0.1' }, `refusal logged as a warning with reason ${reason}`)
  if (detail !== undefined) t.match(line?.detail, detail, 'the log says which rule refused it')
  const text = await scrapeMetrics(mesh)
  t.equal(metricValue(text, FAILURES, { reason }), 1, `${FAILURES}{reason="${reason}"} is 1`)
  t.equal(metricValue(text, FAILURES), 1, 'counted once, under no other reason')
}

/** The valid client gets through the same mesh: the refusals are about the certificate, not the setup. */
async function assertAccepted (t: T, mesh: Mesh, opts: ConnectionOptions, what = 'the valid client is served'): Promise<void> {
  const attempt = await tlsAttempt(opts)
  t.equal(statusOf(attempt.response), 200, what)
}

/** The mesh CA's issuer (certificate + key files), as an issuer for openssl-made certificates. */
function meshIssuer (mesh: Mesh): IssuedCert {
  const certPath = join(mesh.pki.ca.dir, 'issuer.pem')
  const pem = readFileSync(certPath, 'utf8')
  return { name: 'mesh-issuer', der: new X509Certificate(pem).raw, pem, certPath, keyPath: join(mesh.pki.ca.dir, 'issuer-key.pem') }
}

/** An openssl-made leaf as a client SVID: leaf then the mesh issuer, the way a workload presents its chain. */
function asSvid (leaf: IssuedCert, issuer: IssuedCert): SvidFiles {
  return { cert: leaf.certPath, key: leaf.keyPath, chainPem: leaf.pem + issuer.pem, keyPem: readFileSync(leaf.keyPath, 'utf8') }
}

/**
 * What Node's TLS stack alone says about a client certificate: a plain TLS server that verifies
 * clients against the mesh bundle (requestCert + rejectUnauthorized) reports `authorized`.
 */
async function nodeTlsAuthorizes (t: T, mesh: Mesh, svid: SvidFiles): Promise<boolean> {
  const server = createTlsServer({ cert: mesh.server.chainPem, key: mesh.server.keyPem, ca: mesh.pki.ca.bundlePem, requestCert: true, rejectUnauthorized: false })
  const verdict = new Promise<boolean>(resolve => server.once('secureConnection', (s: TLSSocket) => { resolve(s.authorized); s.destroy() }))
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const attempt = tlsAttempt({ ...clientTls(mesh, svid), port: (server.address() as AddressInfo).port })
  const authorized = await verdict
  await attempt
  return authorized
}

t.test('a client that presents no certificate is refused: no-client-certificate', async t => {
  const mesh = await startMesh(t)
  await assertRefused(t, mesh, clientTls(mesh, null), 'no-client-certificate', /no certificate/)
  await assertAccepted(t, mesh, clientTls(mesh))
})

t.test('a certificate from another CA with the same trust domain name is refused: unknown-ca', async t => {
  const mesh = await startMesh(t)
  const other = new MeshPki(tempDir(t), 'example.org')
  const stranger = other.issue('/ns/client/sa/caller', 'stranger')
  t.equal(new X509Certificate(stranger.chainPem).subjectAltName, `URI:${CALLER}`, 'same SPIFFE ID as the allowed caller')
  t.equal(await nodeTlsAuthorizes(t, mesh, stranger), false, '(Node\'s TLS verification refuses this one too)')
  await assertRefused(t, mesh, clientTls(mesh, stranger), 'unknown-ca', /not signed by an authority of trust domain example\.org/)
})

t.test('an expired SVID from the mesh CA is refused: expired', async t => {
  const mesh = await startMesh(t)
  const short = mesh.pki.issue('/ns/client/sa/caller', 'short-lived', 3000)
  const notAfter = new X509Certificate(short.chainPem).validToDate.getTime()
  // While it is still valid the same SVID gets in (checked only when there is ample time left).
  if (Date.now() < notAfter - 1500) {
    const before = await tlsAttempt(clientTls(mesh, short))
    t.equal(statusOf(before.response), 200, 'served while valid')
  }
  // X.509 times have one-second resolution: wait until clearly past notAfter.
  await new Promise(resolve => setTimeout(resolve, Math.max(0, notAfter + 1100 - Date.now())))
  const seen = mesh.app.seen.length
  const decisions = mesh.decisions.length
  const attempt = await tlsAttempt(clientTls(mesh, short))
  t.equal(attempt.response, '', 'no HTTP response after expiry')
  t.equal(mesh.app.seen.length, seen, 'nothing more reached the app')
  t.equal(mesh.decisions.length, decisions, 'no decision line for the refused connection')
  await waitFor(() => mesh.logs.some(l => l.event === 'tls.refused'), 3000, 'a tls.refused log line')
  t.match(mesh.logs.find(l => l.event === 'tls.refused'), { reason: 'expired', detail: /expired at/ }, 'logged with reason expired')
  const text = await scrapeMetrics(mesh)
  t.equal(metricValue(text, FAILURES, { reason: 'expired' }), 1, `${FAILURES}{reason="expired"} is 1`)
  t.equal(metricValue(text, FAILURES), 1, 'counted once')
})

// Certificates signed by the mesh's real issuer key, so the signature chain is fine and Node's TLS
// stack (which accepts CA leaves, several URI SANs, keyCertSign leaves, no keyUsage) lets them finish
// the handshake; only the X.509-SVID rules refuse them.
const badLeaves: Array<{ name: string, what: string, ext: string, reason: string, detail: RegExp }> = [
  { name: 'ca-leaf', what: 'a leaf with CA:TRUE', ext: leafExt({ basicConstraints: 'critical,CA:true', subjectAltName: `URI:${CALLER}` }), reason: 'not-svid', detail: /CA flag/ },
  { name: 'two-uris', what: 'a leaf with two URI SANs', ext: leafExt({ subjectAltName: `URI:${CALLER},URI:spiffe://example.org/ns/admin/sa/root` }), reason: 'not-svid', detail: /more than one URI SAN/ },
  { name: 'keycertsign', what: 'a leaf with keyCertSign', ext: leafExt({ keyUsage: 'critical,digitalSignature,keyCertSign', subjectAltName: `URI:${CALLER}` }), reason: 'not-svid', detail: /keyCertSign/ },
  { name: 'no-keyusage', what: 'a leaf with no keyUsage', ext: leafExt({ keyUsage: null, subjectAltName: `URI:${CALLER}` }), reason: 'not-svid', detail: /no key usage/ },
  { name: 'foreign', what: 'a leaf for another trust domain', ext: leafExt({ subjectAltName: 'URI:spiffe://other.org/x' }), reason: 'foreign-trust-domain', detail: /no trust bundle for trust domain other\.org/ }
]

for (const c of badLeaves) {
  t.test(`${c.what}, signed by the mesh issuer, is refused: ${c.reason}`, async t => {
    const mesh = await startMesh(t)
    const issuer = meshIssuer(mesh)
    const leaf = createPki(t).issue(c.name, issuer, { ext: c.ext })
    t.ok(new X509Certificate(leaf.pem).verify(new X509Certificate(issuer.pem).publicKey), 'really signed by the mesh issuer')
    t.equal(await nodeTlsAuthorizes(t, mesh, asSvid(leaf, issuer)), true, 'Node\'s TLS verification alone would accept it')
    await assertRefused(t, mesh, clientTls(mesh, asSvid(leaf, issuer)), c.reason, c.detail)
    await assertAccepted(t, mesh, clientTls(mesh))
  })
}

t.test('TLS 1.2 is refused by the default TLS 1.3-only listener and accepted when tlsMinVersion is TLSv1.2', async t => {
  t.test('default listener: refused', async t => {
    const mesh = await startMesh(t)
    await assertRefused(t, mesh, { ...clientTls(mesh), maxVersion: 'TLSv1.2' }, 'tls-version-or-cipher', /unsupported protocol/)
    const v13 = await tlsAttempt(clientTls(mesh))
    t.equal(v13.protocol, 'TLSv1.3')
    t.equal(statusOf(v13.response), 200, 'TLS 1.3 is served')
  })
  t.test('tlsMinVersion TLSv1.2: accepted, and the SVID rules still apply', async t => {
    const mesh = await startMesh(t, { sidecar: { tlsMinVersion: 'TLSv1.2' } })
    const v12 = await tlsAttempt({ ...clientTls(mesh), maxVersion: 'TLSv1.2' })
    t.equal(v12.protocol, 'TLSv1.2')
    t.equal(statusOf(v12.response), 200, 'TLS 1.2 is served')
    t.equal(mesh.app.seen.length, 1, 'the request reached the app')
    t.match(mesh.decisions[0], { decision: 'allow', caller: CALLER }, 'decided on the verified caller')
    t.equal(mesh.decisions.length, 1)
    mesh.decisions.length = 0
    mesh.app.seen.length = 0
    await assertRefused(t, mesh, { ...clientTls(mesh, null), maxVersion: 'TLSv1.2' }, 'no-client-certificate')
  })
})

t.test('a TLS session resumption attempt never skips verification', async t => {
  // Sidecar allows TLS 1.2 so both resumption mechanisms are tried: TLS 1.3 tickets and TLS 1.2 session IDs.
  const mesh = await startMesh(t, { sidecar: { tlsMinVersion: 'TLSv1.2' } })
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const first = await tlsAttempt({ ...clientTls(mesh), maxVersion: version })
    t.equal(statusOf(first.response), 200, `${version}: first connection served`)
    if (first.session === undefined) { t.pass(`${version}: the server handed out no session to resume`); continue }
    const again = await tlsAttempt({ ...clientTls(mesh), maxVersion: version, session: first.session })
    t.equal(statusOf(again.response), 200, `${version}: same client, offered session: served`)
    t.equal(again.reused, false, `${version}: after a full handshake, not a resumed one`)
    const seen = mesh.app.seen.length
    const decisions = mesh.decisions.length
    // The session of a verified client, offered without any certificate: a resumed session would carry
    // the old peer's identity. It must be a full handshake, refused for lack of a certificate.
    const bare = await tlsAttempt({ ...clientTls(mesh, null), maxVersion: version, session: first.session })
    t.equal(bare.reused, false, `${version}: no certificate, offered session: not resumed`)
    t.equal(bare.response, '', `${version}: no HTTP response`)
    t.equal(mesh.app.seen.length, seen, `${version}: nothing reached the app`)
    t.equal(mesh.decisions.length, decisions, `${version}: no decision line`)
  }
  await waitFor(() => mesh.logs.filter(l => l.event === 'tls.refused').length >= 2, 3000, 'two tls.refused lines')
  const text = await scrapeMetrics(mesh)
  t.equal(metricValue(text, FAILURES, { reason: 'no-client-certificate' }), 2, 'both bare attempts were refused as presenting no certificate')
  t.equal(metricValue(text, FAILURES, { reason: 'session-resumed' }), 0, 'no session was ever resumed')
  t.equal(metricValue(text, FAILURES), 2, 'no other refusal')
})
