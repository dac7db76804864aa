import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ConnectionOptions, TLSSocket } from 'node:tls'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { openTls, responseReader, tlsAttempt, statusOf, msUntilClosed, type RawResponse } from './helpers/inbound-probe.ts'
import { policyAllowing, type Tap } from './helpers/mesh.ts'
import { startCaMesh, OK_APP, A_ID, B_ID, type CaMesh } from './helpers/ca-mesh.ts'
import { waitFor } from './helpers/wait.ts'
import { replaceFile } from './helpers/files.ts'

// Continuous verification at B's inbound: authorization is per request, not per connection, and a
// connection does not outlive the certificate its peer presented.
//   a. A policy change (a deny quarantining A) applies to the next request on an already open
//      keep-alive connection.
//   b. A kept-alive connection whose peer certificate expires while idle is closed by the sidecar at
//      expiry; a new connection with that certificate is refused.
//   c. A request in flight at expiry finishes; the next one on that connection gets 401 and the
//      connection is closed.

const C_ID = 'spiffe://example.org/ns/c/sa/short-lived'
const POLICY = policyAllowing(A_ID, C_ID)
const QUARANTINE = `${POLICY}deny:
  - name: quarantined
    from: ["${A_ID}"]
`
const GET = (path: string): string => `GET ${path} HTTP/1.1\r\nhost: b.internal\r\n\r\n`

const app = (req: IncomingMessage, res: ServerResponse): void => {
  if (req.url?.startsWith('/slow') === true) setTimeout(() => { OK_APP(req, res) }, 2500)
  else OK_APP(req, res)
}

/** TLS options straight to B's inbound presenting `svid`, trusting the CA bundle; B is known by SPIFFE ID, not DNS. */
function toB (mesh: CaMesh, svid: { chainPem: string, keyPem: string }): ConnectionOptions {
  return {
    host: '127.0.0.1',
    port: mesh.b.sidecar.inbound.port,
    cert: svid.chainPem,
    key: svid.keyPem,
    ca: readFileSync(join(mesh.ca.dir, 'bundle.pem'), 'utf8'),
    checkServerIdentity: () => undefined
  }
}

async function keptAlive (t: Tap, opts: ConnectionOptions): Promise<{ socket: TLSSocket, next: () => Promise<RawResponse>, closedAt: () => number | undefined }> {
  const socket = await openTls(opts)
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  let closedAt: number | undefined
  socket.on('close', () => { closedAt = Date.now() })
  return { socket, next: responseReader(socket), closedAt: () => closedAt }
}

t.test('a policy change applies to the next request on an open keep-alive connection', async t => {
  const mesh = await startCaMesh(t, { leafTtlMs: 60_000, bPolicy: POLICY, bApp: app })
  const { b } = mesh
  const svidA = mesh.a.sidecar.credentials.current!
  const conn = await keptAlive(t, toB(mesh, svidA))
  t.match(conn.socket.getPeerCertificate().subjectaltname, B_ID, 'connected to B, presenting A\'s CA-issued SVID')

  conn.socket.write(GET('/before'))
  const first = await conn.next()
  t.equal(first.status, 200, 'allowed before the policy change')
  t.equal(b.app.seen.length, 1)

  const revision = b.sidecar.policy.current!.revision
  replaceFile(b.policyFile, QUARANTINE, 0o644)
  await waitFor(() => b.sidecar.policy.current!.revision !== revision, 5000, 'B to load the quarantine policy')
  t.ok(b.events('policy.loaded').some(l => l.trigger === 'file-change' && l.denyRules === 1), 'B reloaded its policy from the file')

  conn.socket.write(GET('/after'))
  const second = await conn.next()
  t.equal(second.status, 403, 'the next request on the same connection is denied')
  t.match(JSON.parse(second.body), { error: 'GH_FORBIDDEN' })
  t.equal(b.app.seen.length, 1, 'and never reached B\'s app')
  t.match(b.decisions.at(-1), { decision: 'deny', rule: 'quarantined', caller: A_ID, path: '/after', status: 403, peerCertSerial: svidA.leaf.serialHex }, 'B logged the deny by the quarantine rule')
  t.equal(conn.closedAt(), undefined, 'the connection is still the same, still open')

  replaceFile(b.policyFile, POLICY, 0o644)
  await waitFor(() => b.sidecar.policy.current!.revision === revision, 5000, 'B to load the lifted policy')
  conn.socket.write(GET('/lifted'))
  t.equal((await conn.next()).status, 200, 'lifting the quarantine applies to the next request too, same connection')
  t.equal(conn.closedAt(), undefined, 'one connection for all three requests')
})

t.test('an idle keep-alive connection is closed when its peer certificate expires; the expired certificate is refused', async t => {
  const mesh = await startCaMesh(t, { leafTtlMs: 60_000, bPolicy: POLICY, bApp: app })
  const { b } = mesh
  // A static SVID (no sidecar renewing it) with a 3 s lifetime, from the same CA.
  const svidC = mesh.ca.issue(C_ID, 3000)
  const notAfter = svidC.notAfter.getTime()
  const conn = await keptAlive(t, toB(mesh, svidC))
  conn.socket.write(GET('/short'))
  const ok = await conn.next()
  t.equal(ok.status, 200, 'allowed while valid')
  t.notMatch(ok.headers.connection ?? '', /close/i, 'kept alive')
  t.ok(Date.now() < notAfter, `${notAfter - Date.now()} ms of validity left; the connection now idles (B's idle timeout is 30 s)`)

  const waited = await msUntilClosed(conn.socket, notAfter - Date.now() + 5000)
  const closedAt = conn.closedAt()!
  t.pass(`the connection was closed by B ${waited.toFixed(0)} ms later`)
  t.ok(closedAt >= notAfter - 50, `not before expiry (${closedAt - notAfter} ms after notAfter)`)
  t.ok(closedAt <= notAfter + 1500, 'promptly after expiry')

  const again = await tlsAttempt(toB(mesh, svidC), 'GET /again HTTP/1.1\r\nhost: b.internal\r\nconnection: close\r\n\r\n')
  t.equal(statusOf(again.response), undefined, 'a new connection with the expired certificate gets no HTTP answer')
  t.ok(b.events('tls.refused').some(l => l.reason === 'expired'), 'B refused the handshake as expired')
  t.equal(b.app.seen.filter(r => r.url === '/again').length, 0, 'nothing reached the app')
})

t.test('a request in flight at expiry finishes; the next one on that connection is refused and the connection closed', async t => {
  const mesh = await startCaMesh(t, { leafTtlMs: 60_000, bPolicy: POLICY, bApp: app })
  const { b } = mesh
  const svidC = mesh.ca.issue(C_ID, 3000)
  const notAfter = svidC.notAfter.getTime()
  const conn = await keptAlive(t, toB(mesh, svidC))
  // Start a 2.5 s request so that it is in flight at expiry.
  await waitFor(() => notAfter - Date.now() < 1500, 5000, 'expiry to come within 1.5 s')
  conn.socket.write(GET('/slow'))
  const slow = await conn.next()
  t.equal(slow.status, 200, 'the request in flight at expiry was answered')
  t.ok(Date.now() > notAfter, 'after expiry')
  conn.socket.write(GET('/next'))
  const next = await conn.next()
  t.equal(next.status, 401, 'the next request on the connection is refused')
  t.match(JSON.parse(next.body), { error: 'GH_PEER_CERT_EXPIRED', message: /expired/ })
  t.match(next.headers.connection, /close/i, 'with Connection: close')
  await msUntilClosed(conn.socket, 2000)
  t.pass('and the connection is closed')
  t.equal(b.app.seen.filter(r => r.url === '/next').length, 0, 'the refused request never reached the app')
  t.match(b.decisions.at(-1), { decision: 'deny', reason: 'peer-certificate-expired', caller: C_ID, status: 401 }, 'B logged the refusal')
})
