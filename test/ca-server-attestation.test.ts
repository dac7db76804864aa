import t from 'tap'
import { readFileSync, writeFileSync, statSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { randomUUID, createPublicKey } from 'node:crypto'
import { createServer as createHttpsServer } from 'node:https'
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { SignJWT } from 'jose'
import { mintJoinToken, JOIN_TOKEN_TYP, CA_AUDIENCE } from '../src/ca/join-token.ts'
import { jwksFromFile, jwksFromUrl } from '../src/ca/k8s-token.ts'
import { Issuer } from '../src/ca/issuer.ts'
import { FILES } from '../src/ca/ca-directory.ts'
import { generateKey } from '../src/x509/keys.ts'
import { pemToDers } from '../src/x509/certificate.ts'
import { verifyX509Svid } from '../src/spiffe/svid.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { TokenInvalidError } from '../src/errors.ts'
import { startCaFixture, tempCa, call, postSvid, TD, VM_ID, SA_ID, POD, keyPem, spki, keyAndCsr, joinToken, leafOf, openssl, refused, b64url, listen, saSigner, saClaims, saToken, withUnknownKid, writeJwks, k8sVerifier } from './helpers/ca-fixture.ts'
import { tempDir } from './helpers/files.ts'

// The CA's HTTPS API end to end, attestation: real TLS on 127.0.0.1, real keys and CSRs (ours and
// openssl's), join tokens from mintJoinToken and Kubernetes service-account tokens shaped exactly like
// the kube-apiserver's, good and bad. Renewal: ca-server-renewal.test.ts; hostile input, rate limiting,
// the bundle endpoint and the log: ca-server-http.test.ts. Shared helpers: helpers/ca-fixture.ts.

t.test('join token: issuance, CSR subject ignored, single use across restarts', async t => {
  const f = await startCaFixture(t, { trustDomain: TD })

  t.test('a join token and a CSR get an SVID for the token\'s ID', async t => {
    const { privateKey, csr } = keyAndCsr()
    const token = await joinToken(f.ca)
    const before = Date.now()
    const r = await postSvid(f, { token, csr })
    t.equal(r.status, 200, 'HTTP 200')
    t.match(r.headers['content-type'], /^application\/json/)
    t.equal(r.headers['cache-control'], 'no-store')
    t.equal(r.json.spiffeId, VM_ID.toString(), 'spiffeId is the token\'s')
    t.equal(r.json.bundle, f.ca.bundlePem, 'bundle is the CA bundle')
    const ders = pemToDers(r.json.chain)
    t.equal(ders.length, 2, 'chain is leaf + issuer')
    t.ok(ders[1]!.equals(f.ca.issuer.der), 'second certificate is the issuer')
    const verified = verifyX509Svid(ders, f.ca.bundle)
    t.equal(verified.id.toString(), VM_ID.toString(), 'chain verifies as an X509-SVID for the ID')
    t.equal(verified.leaf.serialHex, r.json.serial, 'serial matches the leaf')
    t.ok(spki(verified.leaf.publicKey).equals(spki(privateKey)), 'leaf certifies the CSR key')
    const expiresAt = Date.parse(r.json.expiresAt)
    t.equal(expiresAt, verified.leaf.notAfter.getTime(), 'expiresAt is the leaf notAfter')
    t.ok(Math.abs(expiresAt - (before + 3_600_000)) < 120_000, `default lifetime ~1h (${r.json.expiresAt})`)
    t.ok(Date.parse(r.json.notBefore) <= before, 'notBefore not in the future')
  })

  t.test('an RSA-2048 CSR is accepted too', async t => {
    const { privateKey, csr } = keyAndCsr('rsa-2048')
    const r = await postSvid(f, { token: await joinToken(f.ca), csr })
    t.equal(r.status, 200)
    t.ok(spki(leafOf(r.json.chain).publicKey).equals(spki(privateKey)), 'leaf certifies the RSA key')
  })

  t.test('subject and SANs of an openssl CSR are ignored; the token decides the ID', async t => {
    const dir = tempDir(t)
    openssl(dir, 'ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'k.pem')
    openssl(dir, 'req', '-new', '-key', 'k.pem', '-subj', '/CN=evil', '-addext', `subjectAltName=URI:spiffe://${TD}/ns/admin/sa/root,DNS:evil.example`, '-out', 'csr.pem')
    const csr = readFileSync(join(dir, 'csr.pem'), 'utf8')
    const r = await postSvid(f, { token: await joinToken(f.ca), csr })
    t.equal(r.status, 200, 'openssl CSR accepted')
    t.equal(r.json.spiffeId, VM_ID.toString(), 'issued ID is the token\'s')
    const leaf = leafOf(r.json.chain)
    t.same(leaf.profile.subjectAltName?.value.uris, [VM_ID.toString()], 'the only URI SAN is the token\'s ID')
    t.same(leaf.profile.subjectAltName?.value.dns, [], 'no DNS SAN from the CSR')
    t.notMatch(leaf.x509.subject, /evil/, 'no CN from the CSR')
    t.ok(spki(leaf.publicKey).equals(spki(createPublicKey(readFileSync(join(dir, 'k.pem'))))), 'leaf certifies the openssl key')
  })

  t.test('a join token is single use', async t => {
    const token = await joinToken(f.ca)
    const first = await postSvid(f, { token, csr: keyAndCsr().csr })
    t.equal(first.status, 200, 'first use')
    refused(t, await postSvid(f, { token, csr: keyAndCsr().csr }), 401, 'GH_TOKEN_REPLAYED', 'second use', /already been used/)
  })

  t.test('concurrent uses of one token: exactly one wins', async t => {
    const token = await joinToken(f.ca)
    const results = await Promise.all(Array.from({ length: 8 }, async () => await postSvid(f, { token, csr: keyAndCsr().csr })))
    t.equal(results.filter(r => r.status === 200).length, 1, 'one 200')
    t.same(results.filter(r => r.status !== 200).map(r => r.json?.error), Array(7).fill('GH_TOKEN_REPLAYED'), 'the rest GH_TOKEN_REPLAYED')
  })

  t.test('replay is refused after a restart on the same CA dir', async t => {
    const dir = tempCa(t, TD).dir
    const first = await startCaFixture(t, { dir })
    const token = await joinToken(first.ca)
    t.equal((await postSvid(first, { token, csr: keyAndCsr().csr })).status, 200, 'used once')
    await first.close()
    const usedLog = join(dir, FILES.usedTokens)
    t.ok(existsSync(usedLog), 'used-token log written')
    t.equal(statSync(usedLog).mode & 0o777, 0o600, 'used-token log is 0600')
    t.notMatch(readFileSync(usedLog, 'utf8'), token.split('.')[2]!, 'the log holds no token text')

    const second = await startCaFixture(t, { dir })
    refused(t, await postSvid(second, { token, csr: keyAndCsr().csr }), 401, 'GH_TOKEN_REPLAYED', 'same token after restart', /already been used/)
    t.equal((await postSvid(second, { token: await joinToken(second.ca), csr: keyAndCsr().csr })).status, 200, 'a fresh token works after restart')
  })

  t.test('expired, foreign and malformed join tokens are refused', async t => {
    const { csr } = keyAndCsr()
    const expired = await joinToken(f.ca, { now: new Date(Date.now() - 2 * 3_600_000), ttlMs: 600_000 })
    refused(t, await postSvid(f, { token: expired, csr }), 401, 'GH_TOKEN_INVALID', 'expired token', /expired/)

    // Another CA of the same trust domain: same issuer claim, different token key.
    const other = tempCa(t, TD).ca
    const forged = await mintJoinToken({ tokenKey: other.tokenKey, trustDomain: TD, id: VM_ID, ttlMs: 600_000 })
    refused(t, await postSvid(f, { token: forged, csr }), 401, 'GH_TOKEN_INVALID', 'token signed by another CA\'s token key', /signature does not verify/)

    // Another trust domain's CA and its own token.
    const foreign = tempCa(t, 'other.example').ca
    const foreignToken = await mintJoinToken({ tokenKey: foreign.tokenKey, trustDomain: 'other.example', id: SpiffeId.parse('spiffe://other.example/vm/billing'), ttlMs: 600_000 })
    refused(t, await postSvid(f, { token: foreignToken, csr }), 401, 'GH_TOKEN_INVALID', 'another trust domain\'s token', /signature does not verify/)

    // mintJoinToken refuses IDs outside the trust domain, and the root ID.
    await t.rejects(mintJoinToken({ tokenKey: f.ca.tokenKey, trustDomain: TD, id: SpiffeId.parse('spiffe://other.example/vm/billing'), ttlMs: 600_000 }), TokenInvalidError, 'cannot mint for another trust domain')
    await t.rejects(mintJoinToken({ tokenKey: f.ca.tokenKey, trustDomain: TD, id: SpiffeId.parse(`spiffe://${TD}`), ttlMs: 600_000 }), TokenInvalidError, 'cannot mint for the trust domain ID')

    // Signed with OUR token key but naming something we must not issue: hand-made, since mintJoinToken refuses.
    const now = Math.floor(Date.now() / 1000)
    const handMade = async (claims: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> =>
      await new SignJWT({ iss: `spiffe://${TD}`, aud: CA_AUDIENCE, sub: VM_ID.toString(), jti: randomUUID(), iat: now, exp: now + 600, ...claims })
        .setProtectedHeader({ alg: 'ES256', typ: JOIN_TOKEN_TYP, ...header } as { alg: string })
        .sign(f.ca.tokenKey)
    refused(t, await postSvid(f, { token: await handMade({ sub: 'spiffe://other.example/vm/billing' }), csr }), 401, 'GH_TOKEN_INVALID', 'our key, other trust domain\'s ID', /no workload of this trust domain/)
    refused(t, await postSvid(f, { token: await handMade({ sub: `spiffe://${TD}` }), csr }), 401, 'GH_TOKEN_INVALID', 'our key, trust domain ID', /no workload of this trust domain/)
    refused(t, await postSvid(f, { token: await handMade({ sub: 'not a spiffe id' }), csr }), 401, 'GH_TOKEN_INVALID', 'our key, sub not a SPIFFE ID', /no workload of this trust domain/)
    refused(t, await postSvid(f, { token: await handMade({ aud: 'someone-else' }), csr }), 401, 'GH_TOKEN_INVALID', 'our key, wrong audience', /"aud"/)
    refused(t, await postSvid(f, { token: await handMade({ iss: 'spiffe://other.example' }), csr }), 401, 'GH_TOKEN_INVALID', 'our key, wrong issuer', /"iss"/)
    refused(t, await postSvid(f, { token: await handMade({ jti: undefined }), csr }), 401, 'GH_TOKEN_INVALID', 'our key, no jti', /"jti".*missing/)
    refused(t, await postSvid(f, { token: await handMade({ exp: undefined }), csr }), 401, 'GH_TOKEN_INVALID', 'our key, no exp', /"exp".*missing/)
    refused(t, await postSvid(f, { token: await handMade({}, { typ: 'JWT' }), csr }), 401, 'GH_TOKEN_INVALID', 'our key, not typed as a join token (no SA verifier configured)', /not a join token/)
    refused(t, await postSvid(f, { token: 'not-a-jwt', csr }), 401, 'GH_TOKEN_INVALID', 'not a JWT', /not a JWT/)
    refused(t, await postSvid(f, { token: `${b64url({ alg: 'none', typ: JOIN_TOKEN_TYP })}.${b64url({ iss: `spiffe://${TD}`, aud: CA_AUDIENCE, sub: VM_ID.toString(), jti: randomUUID(), exp: now + 600 })}.`, csr }), 401, 'GH_TOKEN_INVALID', 'alg none join token', /algorithm is not allowed/)
  })
})

t.test('Kubernetes service-account tokens', async t => {
  const jwksDir = tempDir(t)
  const signer = await saSigner()
  const f = await startCaFixture(t, { trustDomain: TD, k8s: k8sVerifier(jwksFromFile(writeJwks(jwksDir, signer))) })

  t.test('a projected SA token gets spiffe://TD/ns/NS/sa/SA; the log names the pod', async t => {
    const { privateKey, csr } = keyAndCsr()
    const r = await postSvid(f, { token: await saToken(signer), csr })
    t.equal(r.status, 200)
    t.equal(r.json.spiffeId, SA_ID)
    const verified = verifyX509Svid(pemToDers(r.json.chain), f.ca.bundle)
    t.equal(verified.id.toString(), SA_ID, 'chain verifies')
    t.ok(spki(verified.leaf.publicKey).equals(spki(privateKey)), 'leaf certifies the CSR key')
    const line = f.logs().find(l => l.event === 'svid.issued' && l.serial === r.json.serial)
    t.ok(line, 'issuance logged')
    t.equal(line?.attestation, 'k8s-sa-token')
    t.equal(line?.pod, `payments/${POD.name}`, 'log line names the pod')
    t.equal(line?.podUid, POD.uid, 'and its uid')
  })

  t.test('SA tokens are reusable (unlike join tokens)', async t => {
    const token = await saToken(signer)
    const a = await postSvid(f, { token, csr: keyAndCsr().csr })
    const b = await postSvid(f, { token, csr: keyAndCsr().csr })
    t.equal(a.status, 200, 'first use')
    t.equal(b.status, 200, 'second use')
    t.not(a.json.serial, b.json.serial, 'two distinct leaves')
  })

  t.test('bad SA tokens are refused with GH_TOKEN_INVALID', async t => {
    const now = Math.floor(Date.now() / 1000)
    const k8s = saClaims()['kubernetes.io'] as Record<string, unknown>
    const stranger = await saSigner('stranger')
    const impostor = await saSigner(signer.kid) // same kid, different key
    const publicPem = createPublicKey({ key: signer.jwk as import('node:crypto').JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
    const cases: Array<[string, RegExp, Promise<string> | string]> = [
      ['wrong audience', /"aud"/, saToken(signer, { claims: saClaims({ aud: ['https://kubernetes.default.svc.cluster.local'] }) })],
      ['no audience', /"aud".*missing/, saToken(signer, { claims: saClaims({ aud: undefined }) })],
      ['wrong issuer', /"iss"/, saToken(signer, { claims: saClaims({ iss: 'https://evil.example' }) })],
      ['expired (beyond the 30 s tolerance)', /expired/, saToken(signer, { claims: saClaims({ exp: now - 120, iat: now - 720, nbf: now - 720 }) })],
      ['not yet valid', /"nbf"/, saToken(signer, { claims: saClaims({ nbf: now + 600, iat: now + 600, exp: now + 4200 }) })],
      ['no exp', /"exp".*missing/, saToken(signer, { claims: saClaims({ exp: undefined }) })],
      ['no pod binding (legacy-style token)', /not bound to a pod/, saToken(signer, { claims: saClaims({ 'kubernetes.io': { ...k8s, pod: undefined } }) })],
      ['pod without uid', /not bound to a pod/, saToken(signer, { claims: saClaims({ 'kubernetes.io': { ...k8s, pod: { name: POD.name } } }) })],
      ['no kubernetes.io claim', /kubernetes\.io claim/, saToken(signer, { claims: saClaims({ 'kubernetes.io': undefined }) })],
      ['sub names another service account', /disagrees/, saToken(signer, { claims: saClaims({ sub: 'system:serviceaccount:payments:admin' }) })],
      ['sub names another namespace', /disagrees/, saToken(signer, { claims: saClaims({ sub: 'system:serviceaccount:kube-system:api' }) })],
      ['kubernetes.io namespace disagrees', /disagrees/, saToken(signer, { claims: saClaims({ 'kubernetes.io': { ...k8s, namespace: 'kube-system' } }) })],
      ['sub is not a service account', /no system:serviceaccount subject/, saToken(signer, { claims: saClaims({ sub: 'system:node:node-1' }) })],
      ['unknown kid', /not in the JWKS/, saToken(stranger)],
      ['known kid, other key', /signature does not verify/, saToken(impostor)],
      ['alg none', /algorithm is not allowed/, `${b64url({ alg: 'none', kid: signer.kid })}.${b64url(saClaims())}.`],
      ['HS256 keyed with the public key', /algorithm is not allowed/, saToken(signer, { header: { alg: 'HS256' }, key: new TextEncoder().encode(publicPem) })],
      ['HS256 keyed with the JWK modulus', /algorithm is not allowed/, saToken(signer, { header: { alg: 'HS256' }, key: Buffer.from(signer.jwk.n!, 'base64url') })],
      ['signature stripped', /signature does not verify/, saToken(signer).then(s => s.slice(0, s.lastIndexOf('.') + 1))],
      ['SA token dressed as a join token', /join token refused/, saToken(signer, { header: { typ: JOIN_TOKEN_TYP } })]
    ]
    for (const [what, reason, token] of cases) {
      refused(t, await postSvid(f, { token: await token, csr: keyAndCsr().csr }), 401, 'GH_TOKEN_INVALID', what, reason)
    }
  })

  t.test('jwksFromUrl: the API server JWKS over HTTPS with the cluster CA and a bearer token', async t => {
    const cluster = tempCa(t, 'cluster.local')
    const servingKey = generateKey('ec-p256')
    const serving = new Issuer(cluster.ca).issue({ id: SpiffeId.parse('spiffe://cluster.local/kube-apiserver'), publicKey: servingKey.publicKey, ips: ['127.0.0.1'], dns: ['localhost'] })
    const seen: Array<{ url: string | undefined, authorization: string | undefined, accept: string | undefined }> = []
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      seen.push({ url: req.url, authorization: req.headers.authorization, accept: req.headers.accept })
      if (req.headers.authorization !== 'Bearer jwks-reader-token') { res.writeHead(401).end(); return }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [signer.jwk] }))
    }
    const apiServer = createHttpsServer({ key: keyPem(servingKey.privateKey), cert: serving.chainPem }, handler)
    const port = await listen(t, apiServer)
    const tokenFile = join(cluster.dir, 'reader-token')
    writeFileSync(tokenFile, 'jwks-reader-token\n')
    const jwks = jwksFromUrl(`https://127.0.0.1:${port}/openid/v1/jwks`, { caFile: join(cluster.dir, FILES.bundle), tokenFile })
    const g = await startCaFixture(t, { trustDomain: TD, k8s: k8sVerifier(jwks) })
    const token = await saToken(signer)
    const a = await postSvid(g, { token, csr: keyAndCsr().csr })
    t.equal(a.status, 200, 'issued with the fetched JWKS')
    t.equal(a.json?.spiffeId, SA_ID)
    t.equal((await postSvid(g, { token, csr: keyAndCsr().csr })).status, 200, 'again')
    t.equal(seen.length, 1, 'JWKS fetched once and cached')
    t.same(seen[0], { url: '/openid/v1/jwks', authorization: 'Bearer jwks-reader-token', accept: 'application/json' }, 'bearer token file sent (trimmed)')
    refused(t, await postSvid(g, { token: await saToken(withUnknownKid(signer)), csr: keyAndCsr().csr }), 401, 'GH_TOKEN_INVALID', 'kid not in the fetched JWKS', /not in the JWKS/)
  })

  t.test('jwksFromUrl over plain HTTP; an unreachable JWKS is a 503 and the server lives on', async t => {
    let up = true
    const httpServer = createHttpServer((req, res) => {
      if (!up) { res.writeHead(500).end(); return }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [signer.jwk] }))
    })
    const port = await listen(t, httpServer)
    const g = await startCaFixture(t, { trustDomain: TD, k8s: k8sVerifier(jwksFromUrl(`http://127.0.0.1:${port}/jwks`)) })
    t.equal((await postSvid(g, { token: await saToken(signer), csr: keyAndCsr().csr })).status, 200, 'issued with the JWKS from HTTP')

    up = false
    const down = await startCaFixture(t, { trustDomain: TD, k8s: k8sVerifier(jwksFromUrl(`http://127.0.0.1:${port}/jwks`)) })
    const r = await postSvid(down, { token: await saToken(signer), csr: keyAndCsr().csr })
    refused(t, r, 503, 'GH_JWKS_UNAVAILABLE', 'JWKS endpoint failing', /cannot fetch JWKS/)
    t.notMatch(r.text, /Bearer|eyJ/, 'error does not echo the token')
    t.equal((await call(down, '/healthz')).status, 200, 'server still alive')
    t.equal((await postSvid(down, { token: await joinToken(down.ca), csr: keyAndCsr().csr })).status, 200, 'join tokens still work')
  })
})
