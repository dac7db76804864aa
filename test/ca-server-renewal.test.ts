import t from 'tap'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { randomUUID, type KeyObject } from 'node:crypto'
import { Agent } from 'undici'
import { jwksFromFile } from '../src/ca/k8s-token.ts'
import { Issuer } from '../src/ca/issuer.ts'
import { generateKey } from '../src/x509/keys.ts'
import { pemToDers } from '../src/x509/certificate.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { startCaFixture, tempCa, postSvid, TD, VM_ID, SA_ID, spki, keyAndCsr, joinToken, leafOf, refused, mtlsAgent, saSigner, saClaims, saToken, writeJwks, k8sVerifier } from './helpers/ca-fixture.ts'
import { tempDir } from './helpers/files.ts'

// The CA's HTTPS API end to end, renewal: real TLS on 127.0.0.1, the current SVID as mTLS client
// certificate, and renewal bound to the original attestation (the chain origin in the leaf, the maximum
// chain age, fresh service-account tokens). Issuance: ca-server-attestation.test.ts; hostile input, rate
// limiting, the bundle endpoint and the log: ca-server-http.test.ts. Shared helpers: helpers/ca-fixture.ts.

t.test('renewal over mTLS with the current SVID', async t => {
  const f = await startCaFixture(t, { trustDomain: TD })
  const first = keyAndCsr()
  const issued = await postSvid(f, { token: await joinToken(f.ca), csr: first.csr })
  t.equal(issued.status, 200, 'initial SVID')

  const mtls = (cert: string, key: KeyObject): Agent => mtlsAgent(t, f.ca, cert, key)

  t.test('the current SVID as client certificate renews the same identity', async t => {
    const next = keyAndCsr()
    const r = await postSvid(f, { csr: next.csr, dispatcher: mtls(issued.json.chain, first.privateKey) })
    t.equal(r.status, 200, 'renewed without a bearer token')
    t.equal(r.json.spiffeId, VM_ID.toString(), 'same SPIFFE ID')
    t.not(r.json.serial, issued.json.serial, 'new serial')
    t.ok(spki(leafOf(r.json.chain).publicKey).equals(spki(next.privateKey)), 'new leaf certifies the new key')
    const line = f.logs().find(l => l.event === 'svid.issued' && l.serial === r.json.serial)
    t.equal(line?.attestation, 'svid')
    t.equal(line?.previousSerial, issued.json.serial, 'log names the previous serial')
    // And the renewed SVID renews in turn.
    const again = await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(r.json.chain, next.privateKey) })
    t.equal(again.status, 200, 'renewed SVID renews again')
    t.equal(again.json.spiffeId, VM_ID.toString())
  })

  t.test('a client certificate from a foreign CA is refused', async t => {
    const foreign = tempCa(t, TD).ca // same trust domain name, different keys
    const key = generateKey('ec-p256')
    const svid = new Issuer(foreign).issue({ id: VM_ID, publicKey: key.publicKey })
    const r = await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(svid.chainPem, key.privateKey) })
    refused(t, r, 403, 'GH_SVID_INVALID', 'same-name trust domain, foreign CA', /not signed by an authority/)

    const otherTd = tempCa(t, 'other.example').ca
    const key2 = generateKey('ec-p256')
    const svid2 = new Issuer(otherTd).issue({ id: SpiffeId.parse('spiffe://other.example/vm/billing'), publicKey: key2.publicKey })
    refused(t, await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(svid2.chainPem, key2.privateKey) }), 403, 'GH_SVID_INVALID', 'foreign trust domain', /no trust bundle for trust domain other\.example/)
  })

  t.test('an expired SVID does not renew', async t => {
    const key = generateKey('ec-p256')
    const past = new Date(Date.now() - 3 * 3_600_000)
    const old = new Issuer(f.ca, { clock: () => past }).issue({ id: VM_ID, publicKey: key.publicKey })
    t.ok(old.notAfter.getTime() < Date.now(), 'leaf is expired')
    refused(t, await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(old.chainPem, key.privateKey) }), 403, 'GH_SVID_INVALID', 'expired client SVID', /expired/)
  })

  t.test('a client that presents only its leaf (no issuer) still renews', async t => {
    const key = generateKey('ec-p256')
    const svid = new Issuer(f.ca).issue({ id: VM_ID, publicKey: key.publicKey, origin: { method: 'join-token', startedAt: new Date() } })
    const leafOnly = svid.chainPem.slice(0, svid.chainPem.indexOf('-----END CERTIFICATE-----') + '-----END CERTIFICATE-----\n'.length)
    t.equal(pemToDers(leafOnly).length, 1, 'one certificate presented')
    const r = await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(leafOnly, key.privateKey) })
    t.equal(r.status, 200, 'renewed')
    t.equal(r.json?.spiffeId, VM_ID.toString())
  })

  t.test('a bearer token takes precedence over the client certificate', async t => {
    const other = SpiffeId.parse(`spiffe://${TD}/vm/other`)
    const r = await postSvid(f, { token: await joinToken(f.ca, { id: other }), csr: keyAndCsr().csr, dispatcher: mtls(issued.json.chain, first.privateKey) })
    t.equal(r.status, 200)
    t.equal(r.json?.spiffeId, other.toString(), 'the token\'s identity, not the certificate\'s')
    refused(t, await postSvid(f, { token: 'garbage', csr: keyAndCsr().csr, dispatcher: mtls(issued.json.chain, first.privateKey) }), 401, 'GH_TOKEN_INVALID', 'a bad token is not rescued by a good certificate')
  })
})

t.test('renewal is bound to the original attestation; the chain origin rides in the leaf', async t => {
  // The CA's renewal-chain clock is moved by the test (certificate validity stays on real time).
  let now = Date.now()
  const MAX_AGE_MS = 24 * 3_600_000
  const signer = await saSigner()
  const f = await startCaFixture(t, { trustDomain: TD, k8s: k8sVerifier(jwksFromFile(writeJwks(tempDir(t), signer))), maxRenewalChainAgeMs: MAX_AGE_MS, clock: () => new Date(now) })
  const mtls = (cert: string, key: KeyObject): Agent => mtlsAgent(t, f.ca, cert, key)
  const issuedLine = (serial: string): Record<string, unknown> | undefined => f.logs().find(l => l.event === 'svid.issued' && l.serial === serial)
  const refusedLine = (previousSerial: string): Record<string, unknown> | undefined => f.logs().find(l => l.event === 'svid.refused' && l.previousSerial === previousSerial)

  t.test('a Kubernetes identity renews with a fresh service-account token, never with its SVID alone', async t => {
    const first = keyAndCsr()
    const r = await postSvid(f, { token: await saToken(signer), csr: first.csr })
    t.equal(r.status, 200, 'issued from a projected SA token')
    const origin = { method: 'k8s-sa-token', startedAt: new Date(now) }
    t.same(leafOf(r.json.chain).profile.renewalOrigin, origin, 'the leaf records its Kubernetes origin')
    t.match(issuedLine(r.json.serial), { attestation: 'k8s-sa-token', origin: 'k8s-sa-token', chainStartedAt: origin.startedAt.toISOString() }, 'svid.issued names the origin')

    now += 30 * 60_000
    const bySvid = await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(r.json.chain, first.privateKey) })
    refused(t, bySvid, 401, 'GH_RENEWAL_TOKEN_REQUIRED', 'the valid SVID alone', /service-account token.*not with the SVID alone/)
    t.match(refusedLine(r.json.serial), { code: 'GH_RENEWAL_TOKEN_REQUIRED', attestation: 'svid', spiffeId: SA_ID, origin: 'k8s-sa-token', chainStartedAt: origin.startedAt.toISOString() }, 'svid.refused names the presented origin')

    // What the sidecar does: the projected token, re-read (the kubelet rotates it), as bearer.
    const next = keyAndCsr()
    const fresh = await postSvid(f, { token: await saToken(signer, { claims: saClaims({ jti: randomUUID() }) }), csr: next.csr })
    t.equal(fresh.status, 200, 'renewed with a fresh SA token')
    t.equal(fresh.json.spiffeId, SA_ID)
    t.same(leafOf(fresh.json.chain).profile.renewalOrigin, { method: 'k8s-sa-token', startedAt: new Date(now) }, 'attested afresh: the origin is this issuance')
    // The token is checked exactly as at first issuance: a good SVID does not rescue a bad token.
    refused(t, await postSvid(f, { token: await saToken(signer, { claims: saClaims({ aud: ['nope'] }) }), csr: keyAndCsr().csr, dispatcher: mtls(fresh.json.chain, next.privateKey) }), 401, 'GH_TOKEN_INVALID', 'a bad SA token next to a valid SVID', /"aud"/)
    refused(t, await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(fresh.json.chain, next.privateKey) }), 401, 'GH_RENEWAL_TOKEN_REQUIRED', 'the renewed SVID alone either')
  })

  t.test('a join-token chain renews by SVID up to the maximum age from the join token; renewals carry the origin and cannot reset it', async t => {
    const start = now
    const k0 = keyAndCsr()
    const joined = await postSvid(f, { token: await joinToken(f.ca), csr: k0.csr })
    t.equal(joined.status, 200, 'issued from a join token')
    const origin = { method: 'join-token', startedAt: new Date(start) }
    t.same(leafOf(joined.json.chain).profile.renewalOrigin, origin, 'the leaf records the join token and when it was spent')
    t.match(issuedLine(joined.json.serial), { attestation: 'join-token', origin: 'join-token', chainStartedAt: origin.startedAt.toISOString() })

    // A private, non-critical extension (so no other verifier rejects the leaf), readable by openssl too.
    const text = execFileSync('openssl', ['x509', '-noout', '-text'], { input: joined.json.chain, encoding: 'utf8' })
    t.match(text, /\n\s+1\.3\.6\.1\.4\.1\.32473\.1\.1:\s*\n/, 'openssl shows the renewal-origin extension, not critical')

    let chain: string = joined.json.chain
    let key = k0.privateKey
    let serial: string = joined.json.serial
    for (const [after, label] of [[60_000, '1 min'], [12 * 3_600_000, '12 h'], [MAX_AGE_MS - 1000, '24 h - 1 s']] as const) {
      now = start + after
      const k = keyAndCsr()
      const r = await postSvid(f, { csr: k.csr, dispatcher: mtls(chain, key) })
      t.equal(r.status, 200, `renewed by SVID ${label} after the join token`)
      t.same(leafOf(r.json.chain).profile.renewalOrigin, origin, `${label}: the new leaf carries the original origin, not the renewal's time`)
      t.match(issuedLine(r.json.serial), { attestation: 'svid', origin: 'join-token', chainStartedAt: origin.startedAt.toISOString(), previousSerial: serial }, `${label}: svid.issued names the chain start and the previous serial`)
      chain = r.json.chain
      key = k.privateKey
      serial = r.json.serial
    }

    // Two seconds later the newest leaf is only two seconds old, but its chain is over 24 h.
    now = start + MAX_AGE_MS + 1000
    const late = await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(chain, key) })
    refused(t, late, 401, 'GH_RENEWAL_CHAIN_EXPIRED', 'past the maximum age', new RegExp(`join token at ${origin.startedAt.toISOString().replace(/\./g, '\\.')}.*maximum of 24h.*new join token is needed: gatehouse ca token --spiffe-id ${VM_ID.toString().replace(/\./g, '\\.')}`))
    t.match(refusedLine(serial), { code: 'GH_RENEWAL_CHAIN_EXPIRED', attestation: 'svid', origin: 'join-token', chainStartedAt: origin.startedAt.toISOString() }, 'svid.refused names the chain start')
    refused(t, await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(joined.json.chain, k0.privateKey) }), 401, 'GH_RENEWAL_CHAIN_EXPIRED', 'the first leaf of the chain too')

    // A new join token starts a new chain.
    const k1 = keyAndCsr()
    const rejoined = await postSvid(f, { token: await joinToken(f.ca), csr: k1.csr, dispatcher: mtls(chain, key) })
    t.equal(rejoined.status, 200, 'a new join token is accepted')
    t.same(leafOf(rejoined.json.chain).profile.renewalOrigin, { method: 'join-token', startedAt: new Date(now) }, 'and starts a new chain')
    t.equal((await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(rejoined.json.chain, k1.privateKey) })).status, 200, 'which renews by SVID again')
  })

  t.test('a leaf that records no origin (ca issue) does not renew by itself', async t => {
    const key = generateKey('ec-p256')
    const svid = new Issuer(f.ca).issue({ id: VM_ID, publicKey: key.publicKey })
    t.equal(leafOf(svid.chainPem).profile.renewalOrigin, undefined, 'no origin recorded')
    refused(t, await postSvid(f, { csr: keyAndCsr().csr, dispatcher: mtls(svid.chainPem, key.privateKey) }), 401, 'GH_RENEWAL_TOKEN_REQUIRED', 'no origin', /records no attestation origin/)
  })

  t.test('every issuance logs where its chain began', async t => {
    const issued = f.logs().filter(l => l.event === 'svid.issued')
    t.ok(issued.length >= 8, `${issued.length} issuances`)
    for (const l of issued) {
      t.ok((l.origin === 'join-token' || l.origin === 'k8s-sa-token') && typeof l.chainStartedAt === 'string', `${String(l.serial)}: origin ${String(l.origin)}, chain started ${String(l.chainStartedAt)}`)
      t.equal(l.origin, l.attestation === 'svid' ? 'join-token' : l.attestation, `${String(l.serial)}: a renewal keeps its join-token origin; a token issuance is its own origin`)
      if (l.attestation === 'svid') t.type(l.previousSerial, 'string', `${String(l.serial)}: a renewal names the previous serial`)
    }
  })
})
