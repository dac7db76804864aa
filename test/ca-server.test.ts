import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync, statSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { randomUUID, createPublicKey, type KeyObject } from 'node:crypto'
import { createServer as createHttpsServer } from 'node:https'
import { createServer as createHttpServer, type Server as HttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { Agent } from 'undici'
import { SignJWT, generateKeyPair, exportJWK, type JWK, type CryptoKey } from 'jose'
import { mintJoinToken, JOIN_TOKEN_TYP, CA_AUDIENCE } from '../src/ca/join-token.ts'
import { K8sTokenVerifier, jwksFromFile, jwksFromUrl, type JwksSource } from '../src/ca/k8s-token.ts'
import { Issuer } from '../src/ca/issuer.ts'
import { RateLimiter } from '../src/ca/rate-limit.ts'
import { FILES, type CaMaterial } from '../src/ca/ca-directory.ts'
import { MAX_BODY_BYTES } from '../src/ca/ca-server.ts'
import { createCsr } from '../src/x509/csr.ts'
import { generateKey, type KeyType } from '../src/x509/keys.ts'
import { parseCertificate, pemToDers, type Certificate } from '../src/x509/certificate.ts'
import { verifyX509Svid } from '../src/spiffe/svid.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { TrustBundle } from '../src/spiffe/bundle.ts'
import { TokenInvalidError } from '../src/errors.ts'
import { startCaFixture, tempCa, call, postSvid, type ApiResponse } from './helpers/ca-fixture.ts'
import { tempDir, type Teardown } from './helpers/files.ts'

// The CA's HTTPS API end to end: real TLS on 127.0.0.1, real keys and CSRs (ours and openssl's),
// join tokens from mintJoinToken, Kubernetes service-account tokens shaped exactly like the
// kube-apiserver's, renewal over mTLS, hostile input, rate limiting, the bundle endpoint and the log.

const TD = 'example.org'
const VM_ID = SpiffeId.parse(`spiffe://${TD}/vm/billing`)
const K8S_ISS = 'https://kubernetes.default.svc.cluster.local'
const SA_ID = `spiffe://${TD}/ns/payments/sa/api`

/** The assertion refused() needs (the subtest's t; kept structural so any tap Test fits). */
interface Asserts {
  equal: (found: unknown, wanted: unknown, message: string) => boolean
  match: (found: unknown, pattern: unknown, message: string) => boolean
}

// ---------------------------------------------------------------------------------------------
// small helpers

const keyPem = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }).toString()
const spki = (k: KeyObject): Buffer => (k.type === 'private' ? createPublicKey(k) : k).export({ type: 'spki', format: 'der' })

function keyAndCsr (type: KeyType = 'ec-p256'): { privateKey: KeyObject, publicKey: KeyObject, csr: string } {
  const key = generateKey(type)
  return { ...key, csr: createCsr(key.privateKey) }
}

async function joinToken (ca: CaMaterial, opts: { id?: SpiffeId, ttlMs?: number, now?: Date } = {}): Promise<string> {
  return await mintJoinToken({ tokenKey: ca.tokenKey, trustDomain: ca.trustDomain, id: opts.id ?? VM_ID, ttlMs: opts.ttlMs ?? 600_000, ...(opts.now === undefined ? {} : { now: opts.now }) })
}

function leafOf (chainPem: string): Certificate {
  const [leaf] = pemToDers(chainPem)
  if (leaf === undefined) throw new Error('no certificate in chain')
  return parseCertificate(leaf)
}

function openssl (cwd: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] })
}

/** A refusal: the status, the stable code and (so a case cannot pass for the wrong reason) the message. */
function refused (t: Asserts, r: ApiResponse, status: number, code: string, what: string, message?: RegExp): void {
  t.equal(r.status, status, `${what}: HTTP ${status}`)
  t.equal(r.json?.error, code, `${what}: ${code}`)
  if (message !== undefined) t.match(r.json?.message, message, `${what}: ${String(message)}`)
}

function b64url (v: unknown): string {
  return Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')
}

/** An undici Agent presenting `cert` (chain PEM) and `key` as its TLS client certificate, closed at teardown. */
function mtlsAgent (t: Teardown, ca: CaMaterial, cert: string, key: KeyObject): Agent {
  const agent = new Agent({ connect: { ca: ca.bundlePem, cert, key: keyPem(key) } })
  t.teardown(async () => { await agent.close() })
  return agent
}

async function listen (t: Teardown, server: HttpServer): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => { resolve() }))
  })
  return (server.address() as AddressInfo).port
}

// ---------------------------------------------------------------------------------------------
// Kubernetes projected service-account tokens, shaped as the kube-apiserver issues them

interface SaSigner { privateKey: CryptoKey, publicKey: CryptoKey, kid: string, jwk: JWK }

async function saSigner (kid = `sa-${randomUUID().slice(0, 8)}`): Promise<SaSigner> {
  const { privateKey, publicKey } = await generateKeyPair('RS256')
  const jwk = { ...await exportJWK(publicKey), kid, alg: 'RS256', use: 'sig' }
  return { privateKey, publicKey, kid, jwk }
}

const POD = { name: 'api-7d4b9c6f5-xk2lp', uid: randomUUID() }

function saClaims (over: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000)
  return {
    aud: [CA_AUDIENCE],
    exp: now + 3600,
    iat: now,
    nbf: now,
    iss: K8S_ISS,
    jti: randomUUID(),
    'kubernetes.io': {
      namespace: 'payments',
      node: { name: 'node-1', uid: randomUUID() },
      pod: { ...POD },
      serviceaccount: { name: 'api', uid: randomUUID() }
    },
    sub: 'system:serviceaccount:payments:api',
    ...over
  }
}

async function saToken (signer: SaSigner, opts: { claims?: Record<string, unknown>, header?: Record<string, unknown>, key?: CryptoKey | KeyObject | Uint8Array } = {}): Promise<string> {
  return await new SignJWT(opts.claims ?? saClaims())
    .setProtectedHeader({ alg: 'RS256', kid: signer.kid, ...opts.header } as { alg: string })
    .sign(opts.key ?? signer.privateKey)
}

/** The same signing key under a kid the JWKS does not list (so only the kid is wrong). */
function withUnknownKid (s: SaSigner): SaSigner {
  return { ...s, kid: 'not-in-the-jwks' }
}

function writeJwks (dir: string, ...signers: SaSigner[]): string {
  const file = join(dir, 'jwks.json')
  writeFileSync(file, JSON.stringify({ keys: signers.map(s => s.jwk) }))
  return file
}

function k8sVerifier (jwks: JwksSource): K8sTokenVerifier {
  return new K8sTokenVerifier({ jwks, issuer: K8S_ISS, trustDomain: TD })
}

// ---------------------------------------------------------------------------------------------

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

t.test('bad input is a 4xx, never a 5xx, and the server lives on', async t => {
  const f = await startCaFixture(t, { trustDomain: TD })
  const dir = tempDir(t)
  const goodCsr = (): string => keyAndCsr().csr
  const tok = async (): Promise<string> => await joinToken(f.ca)
  const statuses: number[] = []
  const check = async (what: string, p: Promise<ApiResponse>, status: number, code: string, message?: RegExp): Promise<void> => {
    const r = await p
    statuses.push(r.status)
    refused(t, r, status, code, what, message)
  }

  await check('garbage PEM', postSvid(f, { token: await tok(), csr: 'hello' }), 400, 'GH_CSR_INVALID')
  await check('PEM armour around garbage', postSvid(f, { token: await tok(), csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA////\n-----END CERTIFICATE REQUEST-----\n' }), 400, 'GH_CSR_INVALID', /not valid DER/)
  await check('a certificate instead of a CSR', postSvid(f, { token: await tok(), csr: f.ca.bundlePem }), 400, 'GH_CSR_INVALID')
  await check('csr is not a string', postSvid(f, { token: await tok(), body: JSON.stringify({ csr: 42 }) }), 400, 'GH_CSR_INVALID')
  await check('JSON null body', postSvid(f, { token: await tok(), body: 'null' }), 400, 'GH_CSR_INVALID')
  await check('empty JSON body', postSvid(f, { token: await tok(), body: '' }), 400, 'GH_BAD_REQUEST')
  await check('body is not JSON', postSvid(f, { token: await tok(), body: '{"csr": ' }), 400, 'GH_BAD_REQUEST')
  await check('wrong content-type', postSvid(f, { token: await tok(), csr: goodCsr(), contentType: 'text/plain' }), 415, 'GH_UNSUPPORTED_MEDIA_TYPE')
  await check('no content-type', call(f, '/v1/svid', { method: 'POST', headers: { authorization: `Bearer ${await tok()}` }, body: JSON.stringify({ csr: goodCsr() }) }), 415, 'GH_UNSUPPORTED_MEDIA_TYPE')
  await check('body > 64 KiB (content-length)', postSvid(f, { token: await tok(), body: JSON.stringify({ csr: 'A'.repeat(MAX_BODY_BYTES) }) }), 413, 'GH_BODY_TOO_LARGE')
  async function * chunks (): AsyncIterable<Buffer> {
    yield Buffer.from('{"csr": "')
    for (let i = 0; i < 5; i++) yield Buffer.alloc(16 * 1024, 0x41)
    yield Buffer.from('"}')
  }
  await check('body > 64 KiB (chunked)', postSvid(f, { token: await tok(), body: Readable.from(chunks()) }), 413, 'GH_BODY_TOO_LARGE')
  await check('CSR > 16 KiB of DER', postSvid(f, { token: await tok(), csr: `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.alloc(20_000, 1).toString('base64')}\n-----END CERTIFICATE REQUEST-----\n` }), 400, 'GH_CSR_INVALID', /larger than 16384/)

  // Proof of possession: a CSR whose signature does not verify.
  const der = Buffer.from(goodCsr().replace(/-----[^-]+-----|\s/g, ''), 'base64')
  const flipped = Buffer.from(der)
  flipped[flipped.length - 1]! ^= 0x01
  const pem = (b: Buffer): string => `-----BEGIN CERTIFICATE REQUEST-----\n${b.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`
  await check('CSR signature byte flipped', postSvid(f, { token: await tok(), csr: pem(flipped) }), 400, 'GH_CSR_INVALID', /does not verify/)
  openssl(dir, 'ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ec.pem')
  openssl(dir, 'req', '-new', '-key', 'ec.pem', '-subj', '/CN=evil', '-out', 'ec.csr')
  const ecDer = Buffer.from(readFileSync(join(dir, 'ec.csr'), 'utf8').replace(/-----[^-]+-----|\s/g, ''), 'base64')
  const at = ecDer.indexOf('evil')
  t.ok(at > 0, 'found the subject in the CSR')
  const renamed = Buffer.from(ecDer)
  renamed[at] = 'a'.charCodeAt(0) // CN=avil: still well-formed, signature no longer matches
  await check('CSR info altered after signing', postSvid(f, { token: await tok(), csr: pem(renamed) }), 400, 'GH_CSR_INVALID', /does not verify/)

  // Key policy.
  openssl(dir, 'genrsa', '-out', 'rsa1024.pem', '1024')
  openssl(dir, 'req', '-new', '-key', 'rsa1024.pem', '-subj', '/CN=x', '-out', 'rsa1024.csr')
  await check('RSA-1024 CSR', postSvid(f, { token: await tok(), csr: readFileSync(join(dir, 'rsa1024.csr'), 'utf8') }), 400, 'GH_KEY_REFUSED', /1024 bits/)
  openssl(dir, 'genpkey', '-algorithm', 'ed25519', '-out', 'ed.pem')
  openssl(dir, 'req', '-new', '-key', 'ed.pem', '-subj', '/CN=x', '-out', 'ed.csr')
  await check('ed25519 CSR', postSvid(f, { token: await tok(), csr: readFileSync(join(dir, 'ed.csr'), 'utf8') }), 400, 'GH_KEY_REFUSED', /ed25519/)
  openssl(dir, 'ecparam', '-name', 'secp521r1', '-genkey', '-noout', '-out', 'p521.pem')
  openssl(dir, 'req', '-new', '-key', 'p521.pem', '-subj', '/CN=x', '-out', 'p521.csr')
  await check('P-521 CSR', postSvid(f, { token: await tok(), csr: readFileSync(join(dir, 'p521.csr'), 'utf8') }), 400, 'GH_KEY_REFUSED', /secp521r1/)

  // Credentials and routing.
  await check('no Authorization', postSvid(f, { csr: goodCsr() }), 401, 'GH_TOKEN_INVALID', /no credentials/)
  await check('Authorization not Bearer', call(f, '/v1/svid', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }, body: JSON.stringify({ csr: goodCsr() }) }), 401, 'GH_TOKEN_INVALID')
  await check('empty bearer', call(f, '/v1/svid', { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer ' }, body: JSON.stringify({ csr: goodCsr() }) }), 401, 'GH_TOKEN_INVALID')
  await check('GET /v1/svid', call(f, '/v1/svid'), 405, 'GH_METHOD_NOT_ALLOWED')
  await check('PUT /v1/svid', call(f, '/v1/svid', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{}' }), 405, 'GH_METHOD_NOT_ALLOWED')
  await check('/nope', call(f, '/nope'), 404, 'GH_NOT_FOUND')
  await check('POST /v1/bundle', call(f, '/v1/bundle', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }), 405, 'GH_METHOD_NOT_ALLOWED')

  t.ok(statuses.every(s => s >= 400 && s < 500), `all refusals are 4xx (${statuses.join(',')})`)
  t.notOk(f.logs().some(l => l.level === 50 || l.err !== undefined), 'no error-level log line (nothing unexpected)')
  const ok = await postSvid(f, { token: await tok(), csr: goodCsr(), contentType: 'application/json; charset=utf-8' })
  t.equal(ok.status, 200, 'a good request still succeeds afterwards')
  t.equal((await call(f, '/healthz')).json?.status, 'ok', 'healthz ok')
})

t.test('rate limit per identity', async t => {
  const f = await startCaFixture(t, { trustDomain: TD, limiter: new RateLimiter({ burst: 2, perMinute: 1 }) })
  t.equal((await postSvid(f, { token: await joinToken(f.ca), csr: keyAndCsr().csr })).status, 200, 'first')
  t.equal((await postSvid(f, { token: await joinToken(f.ca), csr: keyAndCsr().csr })).status, 200, 'second (burst 2)')
  const third = await postSvid(f, { token: await joinToken(f.ca), csr: keyAndCsr().csr })
  refused(t, third, 429, 'GH_RATE_LIMITED', 'third for the same identity', /too many/)
  const retryAfter = Number(third.headers['retry-after'])
  t.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After is 1..60 s (${String(third.headers['retry-after'])})`)
  const other = SpiffeId.parse(`spiffe://${TD}/vm/other`)
  const r = await postSvid(f, { token: await joinToken(f.ca, { id: other }), csr: keyAndCsr().csr })
  t.equal(r.status, 200, 'a different identity is unaffected')
  t.equal(r.json.spiffeId, other.toString())
  const line = f.logs().find(l => l.event === 'svid.refused' && l.code === 'GH_RATE_LIMITED')
  t.equal(line?.spiffeId, VM_ID.toString(), 'refusal logged with the identity')
})

t.test('GET /v1/bundle', async t => {
  const f = await startCaFixture(t, { trustDomain: TD })
  const pem = await call(f, '/v1/bundle')
  t.equal(pem.status, 200)
  t.equal(pem.headers['content-type'], 'application/x-pem-file')
  t.equal(pem.text, f.ca.bundlePem, 'PEM bundle')
  t.equal(pemToDers(pem.text).length, 1)
  t.ok(pemToDers(pem.text)[0]!.equals(f.ca.root.der), 'the root')
  t.equal((await call(f, '/v1/bundle?x=1', { method: 'HEAD' })).status, 200, 'HEAD ok')

  const json = await call(f, '/v1/bundle', { headers: { accept: 'application/json' } })
  t.equal(json.status, 200)
  t.match(json.headers['content-type'], /^application\/json/)
  const keys = json.json.keys as Array<Record<string, unknown>>
  t.equal(keys.length, 1, 'one authority')
  for (const k of keys) {
    t.equal(k.use, 'x509-svid')
    t.equal((k.x5c as string[]).length, 1, 'one x5c')
    t.notOk('kid' in k, 'no kid')
    t.notOk('d' in k, 'no private part')
    t.equal((k.x5c as string[])[0], f.ca.root.der.toString('base64'))
  }
  const parsed = TrustBundle.fromSpiffeJson(json.json, TD)
  t.equal(parsed.authoritiesFor(TD).length, 1, 'round-trips through the SPIFFE bundle parser')
  const svid = await postSvid(f, { token: await joinToken(f.ca), csr: keyAndCsr().csr })
  t.equal(verifyX509Svid(pemToDers(svid.json.chain), parsed).id.toString(), VM_ID.toString(), 'an issued SVID verifies against the served bundle')
})

t.test('logging: one line per issuance and per refusal, never the token', async t => {
  const jwksDir = tempDir(t)
  const signer = await saSigner()
  const f = await startCaFixture(t, { trustDomain: TD, k8s: k8sVerifier(jwksFromFile(writeJwks(jwksDir, signer))), limiter: new RateLimiter({ burst: 2, perMinute: 1 }) })
  const secrets: string[] = []
  const responses: ApiResponse[] = []
  const send = async (p: Promise<ApiResponse>): Promise<ApiResponse> => { const r = await p; responses.push(r); return r }
  const remember = (token: string): string => { secrets.push(token); return token }

  const key = keyAndCsr()
  const joined = await send(postSvid(f, { token: remember(await joinToken(f.ca)), csr: key.csr }))
  const replayed = secrets[0]!
  await send(postSvid(f, { token: replayed, csr: keyAndCsr().csr }))
  await send(postSvid(f, { token: remember(await saToken(signer)), csr: keyAndCsr().csr }))
  await send(postSvid(f, { token: remember(await saToken(signer, { claims: saClaims({ aud: ['nope'] }) })), csr: keyAndCsr().csr }))
  await send(postSvid(f, { token: remember(await joinToken(f.ca, { id: SpiffeId.parse(`spiffe://${TD}/vm/x`) })), csr: 'garbage' }))
  await send(postSvid(f, { token: remember(await joinToken(f.ca, { id: SpiffeId.parse(`spiffe://${TD}/vm/y`) })), csr: keyAndCsr().csr, contentType: 'text/plain' }))
  await send(postSvid(f, { token: remember('eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ'), csr: keyAndCsr().csr }))
  const agent = new Agent({ connect: { ca: f.ca.bundlePem, cert: joined.json.chain, key: keyPem(key.privateKey) } })
  t.teardown(async () => { await agent.close() })
  await send(postSvid(f, { csr: keyAndCsr().csr, dispatcher: agent }))
  await send(postSvid(f, { csr: keyAndCsr().csr, dispatcher: agent })) // 3rd for VM_ID within a minute: rate limited
  await send(postSvid(f, { csr: keyAndCsr().csr }))

  const ok = responses.filter(r => r.status === 200)
  const bad = responses.filter(r => r.status !== 200)
  t.equal(ok.length, 3, 'three issuances (join, SA, renewal)')
  t.equal(bad.length, 7, 'seven refusals')
  t.same(bad.map(r => r.json?.error), ['GH_TOKEN_REPLAYED', 'GH_TOKEN_INVALID', 'GH_CSR_INVALID', 'GH_UNSUPPORTED_MEDIA_TYPE', 'GH_TOKEN_INVALID', 'GH_RATE_LIMITED', 'GH_TOKEN_INVALID'])

  const logs = f.logs()
  const issued = logs.filter(l => l.event === 'svid.issued')
  const refusals = logs.filter(l => l.event === 'svid.refused')
  t.equal(issued.length, ok.length, 'one svid.issued line per issuance')
  t.same(issued.map(l => l.serial), ok.map(r => r.json.serial), 'in order, with the serials')
  for (const [i, l] of issued.entries()) {
    const r = ok[i]!
    t.equal(l.spiffeId, r.json.spiffeId, 'spiffeId')
    t.equal(l.notAfter, r.json.expiresAt, 'notAfter')
    t.equal(l.level, 30, 'info level')
    t.match(l.remote, /^127\.0\.0\.1:\d+$/, 'remote address')
  }
  t.same(issued.map(l => l.attestation), ['join-token', 'k8s-sa-token', 'svid'], 'attestation method')
  t.type(issued[0]!.jti, 'string', 'join issuance names the jti')
  t.equal(refusals.length, bad.length, 'one svid.refused line per refusal')
  t.same(refusals.map(l => l.code), bad.map(r => r.json?.error), 'with the code')
  t.ok(refusals.every(l => l.level === 40 && typeof l.reason === 'string'), 'warn level with a reason')

  const raw = f.rawLogs().join('')
  for (const s of secrets) {
    const [, payload, signature] = s.split('.')
    t.notOk(raw.includes(s), 'token text never logged')
    if (payload !== undefined && payload.length > 8) t.notOk(raw.includes(payload), 'token payload never logged')
    if (signature !== undefined && signature.length > 8) t.notOk(raw.includes(signature), 'token signature never logged')
  }
  t.notMatch(raw, /PRIVATE KEY/, 'no key material logged')
})
