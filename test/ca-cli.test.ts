import t from 'tap'
import { mkdtempSync, rmSync, statSync, readFileSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFileSync, spawn } from 'node:child_process'
import { X509Certificate, type KeyObject } from 'node:crypto'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { Agent } from 'undici'
import { gatehouse, cliPath } from './helpers/run-cli.ts'
import { postSvid } from './helpers/ca-fixture.ts'
import { pemToDers, parseCertificate } from '../src/x509/certificate.ts'
import { createCsr } from '../src/x509/csr.ts'
import { generateKey } from '../src/x509/keys.ts'
import { sleep, waitFor } from './helpers/wait.ts'

const openssl = (...args: string[]): string => execFileSync('openssl', args, { encoding: 'utf8' })

const work = mkdtempSync(join(tmpdir(), 'gh-ca-cli-'))
t.teardown(() => { rmSync(work, { recursive: true, force: true }) })
const dir = join(work, 'ca')

t.test('ca init writes the CA with private files and refuses to overwrite it', async t => {
  const r = gatehouse(['ca', 'init', '--dir', dir, '--trust-domain', 'example.org'])
  t.equal(r.status, 0, r.stderr)
  t.equal(statSync(dir).mode & 0o777, 0o700, 'CA directory is 0700')
  for (const f of ['root-key.pem', 'issuer-key.pem', 'join-token-key.pem']) t.equal(statSync(join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`)
  const bundle = readFileSync(join(dir, 'bundle.pem'), 'utf8')
  t.equal(pemToDers(bundle).length, 1, 'bundle holds the root')
  const root = new X509Certificate(readFileSync(join(dir, 'root.pem')))
  t.ok(root.ca)
  t.match(root.subjectAltName, 'URI:spiffe://example.org', 'root names its trust domain')
  t.equal(root.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'ECDSA P-256 by default')
  const issuerText = openssl('x509', '-in', join(dir, 'issuer.pem'), '-noout', '-text')
  t.match(issuerText, /CA:TRUE, pathlen:0/)
  t.match(issuerText, /Key Usage: critical\s+Certificate Sign, CRL Sign/)
  t.match(openssl('verify', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'issuer.pem')), /OK/)

  const again = gatehouse(['ca', 'init', '--dir', dir, '--trust-domain', 'example.org'])
  t.equal(again.status, 1)
  t.match(again.stderr, 'GH_CA_EXISTS')
  t.equal(readFileSync(join(dir, 'bundle.pem'), 'utf8'), bundle, 'existing CA untouched')
})

t.test('ca init --key-type rsa-2048', async t => {
  const rsaDir = join(work, 'rsa')
  t.equal(gatehouse(['ca', 'init', '--dir', rsaDir, '--trust-domain', 'rsa.test', '--key-type', 'rsa-2048']).status, 0)
  const root = new X509Certificate(readFileSync(join(rsaDir, 'root.pem')))
  t.equal(root.publicKey.asymmetricKeyType, 'rsa')
  const out = join(work, 'rsa-leaf')
  t.equal(gatehouse(['ca', 'issue', '--dir', rsaDir, '--spiffe-id', 'spiffe://rsa.test/w', '--out', out]).status, 0)
  t.match(openssl('verify', '-CAfile', join(rsaDir, 'bundle.pem'), '-untrusted', `${out}.pem`, `${out}.pem`), /OK/)
  t.match(openssl('x509', '-in', `${out}.pem`, '-noout', '-text'), /Signature Algorithm: sha256WithRSAEncryption/)
})

t.test('ca issue: openssl verifies the chain and shows the SVID profile', async t => {
  const out = join(work, 'web')
  const before = Date.now()
  const r = gatehouse(['ca', 'issue', '--dir', dir, '--spiffe-id', 'spiffe://example.org/ns/default/sa/web', '--out', out, '--dns', 'web.default.svc'])
  t.equal(r.status, 0, r.stderr)
  t.equal(statSync(`${out}-key.pem`).mode & 0o777, 0o600, 'key file is 0600')
  t.match(openssl('verify', '-CAfile', join(dir, 'bundle.pem'), '-untrusted', `${out}.pem`, `${out}.pem`), `${out}.pem: OK`)
  const text = openssl('x509', '-in', `${out}.pem`, '-noout', '-text')
  t.match(text, /Basic Constraints: critical\s+CA:FALSE/)
  t.match(text, /Key Usage: critical\s+Digital Signature\n/)
  t.match(text, /Extended Key Usage: \s*\n\s+TLS Web Server Authentication, TLS Web Client Authentication/)
  t.match(text, /Subject Alternative Name: critical\s+URI:spiffe:\/\/example.org\/ns\/default\/sa\/web, DNS:web.default.svc/)
  t.match(text, /Subject Key Identifier/)
  t.match(text, /Authority Key Identifier/)
  t.match(text, /ASN1 OID: prime256v1/)
  t.match(text, /Signature Algorithm: ecdsa-with-SHA256/)
  const [leafDer, issuerDer] = pemToDers(readFileSync(`${out}.pem`, 'utf8'))
  t.ok(issuerDer, 'chain holds the issuer after the leaf')
  const leaf = parseCertificate(leafDer!)
  t.equal(leaf.serialHex.replace(/^0+/, '').length > 24, true, 'serial carries ~128 random bits')
  const lifetime = leaf.notAfter.getTime() - leaf.notBefore.getTime()
  t.ok(lifetime > 3600_000 && lifetime <= 3660_000 + 1000, `1h lifetime plus <= 1 min back-dating (got ${lifetime} ms)`)
  t.ok(leaf.notBefore.getTime() >= before - 61_000 && leaf.notBefore.getTime() <= before, 'notBefore back-dated by at most a minute')
  t.ok(leaf.profile.subjectEmpty, 'identity lives in the SAN only')
})

t.test('ca issue: lifetime never beyond the issuer', async t => {
  const shortDir = join(work, 'short')
  t.equal(gatehouse(['ca', 'init', '--dir', shortDir, '--trust-domain', 'short.test', '--issuer-ttl', '2h']).status, 0)
  const out = join(work, 'short-leaf')
  t.equal(gatehouse(['ca', 'issue', '--dir', shortDir, '--spiffe-id', 'spiffe://short.test/w', '--out', out, '--ttl', '10h']).status, 0)
  const issuer = new X509Certificate(readFileSync(join(shortDir, 'issuer.pem')))
  const leaf = new X509Certificate(readFileSync(`${out}.pem`))
  t.equal(leaf.validToDate.getTime(), issuer.validToDate.getTime(), 'capped at the issuer expiry')
})

t.test('ca issue --csr: the identity is the flag, never the CSR subject or SANs', async t => {
  const key = join(work, 'csr-key.pem')
  const csr = join(work, 'evil.csr')
  openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key)
  openssl('req', '-new', '-key', key, '-subj', '/CN=admin', '-addext', 'subjectAltName=URI:spiffe://example.org/ns/kube-system/sa/admin', '-out', csr)
  const out = join(work, 'from-csr')
  const r = gatehouse(['ca', 'issue', '--dir', dir, '--spiffe-id', 'spiffe://example.org/ns/default/sa/batch', '--out', out, '--csr', csr])
  t.equal(r.status, 0, r.stderr)
  t.notOk(existsSync(`${out}-key.pem`), 'no key written when certifying a CSR')
  const leaf = new X509Certificate(readFileSync(`${out}.pem`))
  t.equal(leaf.subjectAltName, 'URI:spiffe://example.org/ns/default/sa/batch')
  t.notOk(leaf.subject, 'empty subject: nothing copied from the CSR')
  const rsaKey = join(work, 'rsa1024.pem')
  openssl('genrsa', '-out', rsaKey, '1024')
  openssl('req', '-new', '-key', rsaKey, '-subj', '/CN=weak', '-out', join(work, 'weak.csr'))
  const weak = gatehouse(['ca', 'issue', '--dir', dir, '--spiffe-id', 'spiffe://example.org/w', '--out', join(work, 'weak'), '--csr', join(work, 'weak.csr')])
  t.equal(weak.status, 1)
  t.match(weak.stderr, 'GH_KEY_REFUSED')
})

t.test('ca issue refuses identities outside the trust domain or malformed', async t => {
  const foreign = gatehouse(['ca', 'issue', '--dir', dir, '--spiffe-id', 'spiffe://other.org/w', '--out', join(work, 'x')])
  t.equal(foreign.status, 1)
  t.match(foreign.stderr, 'GH_IDENTITY_REFUSED')
  const root = gatehouse(['ca', 'issue', '--dir', dir, '--spiffe-id', 'spiffe://example.org', '--out', join(work, 'x')])
  t.match(root.stderr, 'GH_IDENTITY_REFUSED')
  const bad = gatehouse(['ca', 'issue', '--dir', dir, '--spiffe-id', 'spiffe://Example.org/w', '--out', join(work, 'x')])
  t.match(bad.stderr, 'GH_SPIFFE_ID_INVALID')
  t.notOk(existsSync(join(work, 'x-key.pem')), 'no key file left behind by a refused issuance')
})

t.test('ca token prints a single-use join token for the ID', async t => {
  const r = gatehouse(['ca', 'token', '--dir', dir, '--spiffe-id', 'spiffe://example.org/ns/vm/sa/batch', '--ttl', '5m'])
  t.equal(r.status, 0, r.stderr)
  const token = r.stdout.trim()
  t.equal(decodeProtectedHeader(token).alg, 'ES256')
  const claims = decodeJwt(token)
  t.equal(claims.sub, 'spiffe://example.org/ns/vm/sa/batch')
  t.equal(claims.aud, 'gatehouse-ca')
  t.ok(typeof claims.jti === 'string' && claims.jti.length >= 20, 'has a random jti')
  t.ok(claims.exp! - claims.iat! === 300, '5 minute lifetime')
})

t.test('configuration: every problem at once, env and YAML file sources', async t => {
  const r = gatehouse(['ca', 'issue', '--dir', dir, '--ttl', 'soon', '--key-type', 'dsa', '--nope', 'x'])
  t.equal(r.status, 2, 'configuration errors exit 2')
  t.match(r.stderr, 'GH_CONFIG_INVALID')
  t.match(r.stderr, '--spiffe-id is required')
  t.match(r.stderr, '--out is required')
  t.match(r.stderr, '--ttl (from --ttl): expected a duration')
  t.match(r.stderr, '--key-type (from --key-type): expected one of ec-p256')
  t.match(r.stderr, '--nope: unknown flag')

  const envBad = gatehouse(['ca', 'token', '--dir', dir, '--spiffe-id', 'spiffe://example.org/w'], { GATEHOUSE_TTL: '10 minutes' })
  t.match(envBad.stderr, '--ttl (from env GATEHOUSE_TTL)')
  const envOk = gatehouse(['ca', 'token', '--spiffe-id', 'spiffe://example.org/w'], { GATEHOUSE_DIR: dir, GATEHOUSE_TTL: '2m' })
  t.equal(envOk.status, 0, envOk.stderr)
  const c = decodeJwt(envOk.stdout.trim())
  t.equal(c.exp! - c.iat!, 120)

  const yaml = join(work, 'token.yaml')
  writeFileSync(yaml, `dir: ${dir}\nspiffe-id: spiffe://example.org/from-yaml\nttl: 1m\ncolour: blue\n`)
  const y = gatehouse(['ca', 'token', '--config', yaml])
  t.equal(y.status, 2)
  t.match(y.stderr, `${yaml}: key "colour" is not an option of 'gatehouse ca token'`)
  writeFileSync(yaml, `dir: ${dir}\nspiffe-id: spiffe://example.org/from-yaml\nttl: 1m\n`)
  const y2 = gatehouse(['ca', 'token', '--config', yaml, '--ttl', '3m'])
  t.equal(y2.status, 0, y2.stderr)
  const c2 = decodeJwt(y2.stdout.trim())
  t.equal(c2.sub, 'spiffe://example.org/from-yaml', 'value from the YAML file')
  t.equal(c2.exp! - c2.iat!, 180, 'flag beats file')
})

t.test('ca serve --max-renewal-chain-age: a join-token identity renews by SVID until then, and is refused after', async t => {
  const tooShort = gatehouse(['ca', 'serve', '--dir', dir, '--listen', '127.0.0.1:0', '--max-renewal-chain-age', '500ms'])
  t.equal(tooShort.status, 2, 'below a second is a configuration error')
  t.match(tooShort.stderr, '--max-renewal-chain-age (from --max-renewal-chain-age): expected a duration')

  const child = spawn(process.execPath, [cliPath, 'ca', 'serve', '--dir', dir, '--listen', '127.0.0.1:0', '--max-renewal-chain-age', '2s'], { stdio: ['ignore', 'ignore', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const lines: Array<Record<string, any>> = []
  let partial = ''
  child.stderr.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString('utf8')).split('\n')
    partial = parts.pop() ?? ''
    for (const p of parts) { try { lines.push(JSON.parse(p)) } catch { lines.push({ text: p }) } }
  })
  await waitFor(() => lines.some(l => l.event === 'ca.listening'), 10_000, 'the CA to listen')
  const bundlePem = readFileSync(join(dir, 'bundle.pem'), 'utf8')
  const ca = { url: `https://127.0.0.1:${lines.find(l => l.event === 'ca.listening')!.port as number}`, agent: new Agent({ connect: { ca: bundlePem } }) }
  t.teardown(async () => { await ca.agent.close() })
  const csr = (): { key: KeyObject, csr: string } => { const k = generateKey('ec-p256').privateKey; return { key: k, csr: createCsr(k) } }
  const mtls = (cert: string, key: KeyObject): Agent => {
    const agent = new Agent({ connect: { ca: bundlePem, cert, key: key.export({ type: 'pkcs8', format: 'pem' }).toString() } })
    t.teardown(async () => { await agent.close() })
    return agent
  }

  const id = 'spiffe://example.org/vm/chain'
  const first = csr()
  const joined = await postSvid(ca, { token: gatehouse(['ca', 'token', '--dir', dir, '--spiffe-id', id]).stdout.trim(), csr: first.csr })
  t.equal(joined.status, 200, 'issued from a join token')
  const startedAt = parseCertificate(pemToDers(joined.json.chain)[0]!).profile.renewalOrigin!.startedAt
  const next = csr()
  const renewed = await postSvid(ca, { csr: next.csr, dispatcher: mtls(joined.json.chain, first.key) })
  t.equal(renewed.status, 200, 'renewed by SVID within 2 s')
  // The log line may reach us after the HTTP response does: wait for it rather than read it once.
  await waitFor(() => lines.some(l => l.event === 'svid.issued' && l.serial === renewed.json.serial), 5_000, 'the svid.issued line')
  t.match(lines.find(l => l.event === 'svid.issued' && l.serial === renewed.json.serial), { attestation: 'svid', origin: 'join-token', chainStartedAt: startedAt.toISOString(), previousSerial: joined.json.serial })

  await sleep(Math.max(0, startedAt.getTime() + 2100 - Date.now())) // until the renewal chain is past its 2 s maximum age
  const late = await postSvid(ca, { csr: csr().csr, dispatcher: mtls(renewed.json.chain, next.key) })
  t.equal(late.status, 401, 'refused 2 s after the join token')
  t.equal(late.json?.error, 'GH_RENEWAL_CHAIN_EXPIRED')
  t.match(late.json?.message, `maximum of 2s (ca serve --max-renewal-chain-age); a new join token is needed: gatehouse ca token --spiffe-id ${id}`)
  await waitFor(() => lines.some(l => l.event === 'svid.refused' && l.code === 'GH_RENEWAL_CHAIN_EXPIRED'), 5_000, 'the svid.refused line')
  t.match(lines.find(l => l.event === 'svid.refused' && l.code === 'GH_RENEWAL_CHAIN_EXPIRED'), { spiffeId: id, origin: 'join-token', previousSerial: renewed.json.serial })
})
