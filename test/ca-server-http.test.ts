import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { Agent } from 'undici'
import { jwksFromFile } from '../src/ca/k8s-token.ts'
import { RateLimiter } from '../src/ca/rate-limit.ts'
import { MAX_BODY_BYTES } from '../src/ca/ca-server.ts'
import { pemToDers } from '../src/x509/certificate.ts'
import { verifyX509Svid } from '../src/spiffe/svid.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { TrustBundle } from '../src/spiffe/bundle.ts'
import { startCaFixture, call, postSvid, type ApiResponse, TD, VM_ID, keyPem, keyAndCsr, joinToken, openssl, refused, saSigner, saClaims, saToken, writeJwks, k8sVerifier } from './helpers/ca-fixture.ts'
import { tempDir } from './helpers/files.ts'

// The CA's HTTPS API end to end, the HTTP surface: hostile input (4xx, never 5xx), rate limiting per
// identity, the bundle endpoint and the log (one line per issuance and refusal, never a token), over
// real TLS on 127.0.0.1 with real keys and CSRs. Issuance: ca-server-attestation.test.ts; renewal:
// ca-server-renewal.test.ts. Shared helpers: helpers/ca-fixture.ts.

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
