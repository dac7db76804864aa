import t from 'tap'
import { readFileSync } from 'node:fs'
import { createServer, connect, type TLSSocket } from 'node:tls'
import type { AddressInfo } from 'node:net'
import { Pki, type SvidFiles } from './helpers/mesh.ts'
import { verifyPeer } from '../src/spiffe/peer.ts'
import { TrustBundle } from '../src/spiffe/bundle.ts'
import { tempDir } from './helpers/files.ts'

// verifyPeer remembers a verified leaf per trust bundle, so a peer that reconnects with the same SVID
// is not re-parsed and re-verified. What a cached answer must never do: outlive the certificate,
// survive a bundle change, or answer for another certificate.

const dir = tempDir(t, 'gh-peer-cache-')
const pki = new Pki(dir)
const server = pki.issue('/ns/server/sa/api', 'server')
const bundleOf = (file: string): TrustBundle => TrustBundle.fromPem(readFileSync(file, 'utf8'), { source: file })

/** The server side of a real mTLS connection from a client presenting `client`. */
async function serverSocket (client: SvidFiles): Promise<TLSSocket> {
  const srv = createServer({ cert: readFileSync(server.cert), key: readFileSync(server.key), requestCert: true, rejectUnauthorized: false })
  t.teardown(() => { srv.close() })
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  const accepted = new Promise<TLSSocket>(resolve => srv.once('secureConnection', resolve))
  const c = connect({ host: '127.0.0.1', port: (srv.address() as AddressInfo).port, cert: readFileSync(client.cert), key: readFileSync(client.key), rejectUnauthorized: false })
  c.on('error', () => {})
  t.teardown(() => { c.destroy() })
  const socket = await accepted
  t.teardown(() => { socket.destroy() })
  return socket
}

t.test('a reconnecting peer is answered from the cache, within its validity and its bundle only', async t => {
  const bundle = bundleOf(pki.bundleFile)
  const client = pki.issue('/ns/client/sa/caller', 'client', 60_000)
  const first = verifyPeer(await serverSocket(client), bundle)
  t.equal(first.id, 'spiffe://example.org/ns/client/sa/caller')
  const again = verifyPeer(await serverSocket(client), bundle)
  t.equal(again, first, 'the same SVID on a new connection: the verified identity is reused')

  const other = pki.issue('/ns/client/sa/other', 'other', 60_000)
  t.equal(verifyPeer(await serverSocket(other), bundle).id, 'spiffe://example.org/ns/client/sa/other', 'another certificate is verified on its own')

  const third = await serverSocket(client)
  t.throws(() => verifyPeer(third, bundle, new Date(Date.now() + 61_000)), { code: 'GH_SVID_INVALID', reason: 'expired' }, 'past the certificate\'s notAfter the cached identity is not used')

  const sameRoots = bundleOf(pki.bundleFile)
  t.not(verifyPeer(await serverSocket(client), sameRoots), first, 'a new bundle (even with the same roots) verifies afresh')
  const foreign = new Pki(tempDir(t, 'gh-peer-cache-foreign-'))
  t.throws(() => verifyPeer(third, bundleOf(foreign.bundleFile)), { code: 'GH_SVID_INVALID', reason: 'unknown-ca' }, 'a bundle without the issuing root refuses a peer the old bundle had accepted')
})

