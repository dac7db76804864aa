import t from 'tap'
import { readFileSync } from 'node:fs'
import { verifyX509Svid, leafSpiffeId, checkLeafProfile, type VerifiedSvid } from '../src/spiffe/svid.ts'
import { TrustBundle, type SpiffeBundleJson } from '../src/spiffe/bundle.ts'
import { parseCertificate, pemToDers } from '../src/x509/certificate.ts'
import { KU } from '../src/x509/oids.ts'
import { readCorpusJson, corpusPath } from './helpers/corpora.ts'
import { createPki, leafExt, caExt, type IssuedCert, type ExtLines, type CertOptions } from './helpers/openssl-pki.ts'

// The X.509-SVID checklist (spiffe/spiffe standards/X509-SVID.md + go-spiffe's cases) run against
// verifyX509Svid with certificates made by the openssl CLI: each negative rule gets a certificate
// that violates exactly that rule, each positive rule one that must be accepted. The last subtest
// checks that every requirement id of the checklist has a subtest here.

interface Requirement { id: string, kind: 'negative' | 'positive' | 'both' | 'info' }
interface Fixture { file: string, violates: string[], valid: boolean, certs: number, uri_sans: string[] }
interface Checklist {
  requirements: Requirement[]
  go_spiffe_fixtures: Fixture[]
  go_spiffe_verify_cases: Array<{ name: string, expected_error: string | null, requirement: string | null }>
}

const checklist = readCorpusJson<Checklist>('x509-svid', 'x509_svid_checklist.json')

type Tap = Parameters<Parameters<typeof t.test>[0]>[0]

const ID = 'spiffe://example.org/workload'
const DAY = 86_400_000
const inDays = (days: number): Date => new Date(Date.now() + days * DAY)

const pki = createPki(t)
const root = pki.root('root')
const bundle = TrustBundle.fromPem(root.pem, { defaultTrustDomain: 'example.org' })
const int = pki.intermediate('int', root)
/** A second authority for example.org that is not in `bundle`. */
const rogue = pki.root('rogue')
const otherRoot = pki.root('root-other', { ext: caExt({ subjectAltName: 'URI:spiffe://other.org' }) })

/** A leaf signed by `issuer`: a valid SVID profile with the given extension lines changed. */
function leaf (name: string, issuer: IssuedCert, ext: ExtLines = {}, opts: CertOptions = {}): IssuedCert {
  return pki.issue(name, issuer, { ...opts, ext: leafExt(ext) })
}

const ders = (chain: Array<IssuedCert | Buffer>): Buffer[] => chain.map(c => Buffer.isBuffer(c) ? c : c.der)

function rejects (t: Tap, chain: Array<IssuedCert | Buffer>, reason: string, msg: string, b: TrustBundle = bundle, now?: Date): void {
  t.throws(() => verifyX509Svid(ders(chain), b, now), { code: 'GH_SVID_INVALID', reason }, `${msg}: rejected (${reason})`)
}

function accepts (t: Tap, chain: Array<IssuedCert | Buffer>, id: string, msg: string, b: TrustBundle = bundle, now?: Date): VerifiedSvid | undefined {
  try {
    const v = verifyX509Svid(ders(chain), b, now)
    t.equal(v.id.toString(), id, `${msg}: accepted as ${id}`)
    return v
  } catch (err) {
    t.fail(`${msg}: ${(err as Error).message}`)
    return undefined
  }
}

/** A bundle JWK for `c` as it would arrive over the wire (JSON: `undefined` members are absent). */
const jwk = (c: IssuedCert, extra: Record<string, unknown> = {}): SpiffeBundleJson['keys'][number] =>
  JSON.parse(JSON.stringify({ kty: 'EC', use: 'x509-svid', x5c: [c.der.toString('base64')], ...extra }))

const covered = new Set<string>()
function rule (ids: string[], name: string, fn: (t: Tap) => void): void {
  for (const id of ids) covered.add(id)
  t.test(`${ids.join(', ')}: ${name}`, async t => { fn(t) })
}

t.test('baseline: root -> leaf with the valid SVID profile is accepted', async t => {
  const v = accepts(t, [leaf('baseline', root)], ID, 'baseline leaf')
  t.same(v?.path.map(c => c.der), [v?.leaf.der, root.der], 'path is leaf then root')
})

rule(['SAN-1'], 'leaf without a URI SAN', t => {
  rejects(t, [leaf('san1-dns', root, { subjectAltName: 'DNS:workload.example.org' })], 'not-svid', 'DNS-only SAN')
  rejects(t, [leaf('san1-none', root, { subjectAltName: null })], 'not-svid', 'no SAN at all')
})

rule(['SAN-2'], 'leaf with more than one URI SAN', t => {
  rejects(t, [leaf('san2-two', root, { subjectAltName: `URI:${ID}/a,URI:${ID}/b` })], 'not-svid', 'two spiffe:// URIs')
  rejects(t, [leaf('san2-https', root, { subjectAltName: `URI:${ID},URI:https://example.org/w` })], 'not-svid', 'spiffe:// plus https://')
  rejects(t, [leaf('san2-https-first', root, { subjectAltName: `URI:https://example.org/w,URI:${ID}` })], 'not-svid', 'https:// plus spiffe://')
})

rule(['VAL-3'], 'the same URI SAN twice (go-spiffe dupURIs)', t => {
  rejects(t, [leaf('val3-dup', root, { subjectAltName: `URI:${ID},URI:${ID}` })], 'not-svid', 'duplicate URI SAN')
})

rule(['SAN-3'], 'one URI SAN plus DNS, IP and email SANs is accepted, identity is the URI', t => {
  const v = accepts(t, [leaf('san3', root, { subjectAltName: `DNS:workload.example.org,URI:${ID},IP:10.0.0.1,email:w@example.org` })], ID, 'URI+DNS+IP+email')
  const san = v?.leaf.profile.subjectAltName?.value
  t.same([san?.dns, san?.ips, san?.emails], [['workload.example.org'], ['0a000001'], ['w@example.org']], 'other SAN types are present but not the identity')
})

rule(['LEAF-1'], 'leaf SPIFFE ID without a path', t => {
  rejects(t, [leaf('leaf1', root, { subjectAltName: 'URI:spiffe://example.org' })], 'not-svid', 'spiffe://example.org')
})

rule(['LEAF-2'], 'empty subject needs a critical SAN', t => {
  rejects(t, [leaf('leaf2-noncrit', root, {}, { subject: '/' })], 'not-svid', 'empty subject, non-critical SAN')
  const ok = leaf('leaf2-crit', root, { subjectAltName: `critical,URI:${ID}` }, { subject: '/' })
  t.ok(parseCertificate(ok.der).profile.subjectEmpty, 'openssl -subj / made an empty subject')
  accepts(t, [ok], ID, 'empty subject, critical SAN')
})

rule(['SIGN-1'], '(info) signing certificates without a URI SAN are allowed', t => {
  const bare = pki.intermediate('sign1-int', root, { ext: caExt({ subjectAltName: null }) })
  accepts(t, [leaf('sign1-leaf', bare), bare], ID, 'intermediate without URI SAN')
  const bareRoot = pki.root('sign1-root', { ext: caExt({ subjectAltName: null }) })
  const b = TrustBundle.fromPem(bareRoot.pem, { defaultTrustDomain: 'example.org' })
  accepts(t, [leaf('sign1-leaf2', bareRoot)], ID, 'root without URI SAN, default trust domain', b)
})

rule(['SIGN-2'], 'signing certificate whose SPIFFE ID has a path', t => {
  const bad = pki.intermediate('sign2-int', root, { ext: caExt({ subjectAltName: 'URI:spiffe://example.org/ca' }) })
  rejects(t, [leaf('sign2-leaf', bad), bad], 'bad-chain', 'intermediate spiffe://example.org/ca')
  const badRoot = pki.root('sign2-root', { ext: caExt({ subjectAltName: 'URI:spiffe://example.org/ca' }) })
  t.throws(() => TrustBundle.fromPem(badRoot.pem), { code: 'GH_BUNDLE_INVALID' }, 'a root with a path SPIFFE ID is refused as a bundle authority')
})

rule(['SIGN-3'], 'multi-level chains are accepted', t => {
  accepts(t, [leaf('sign3-leaf', int), int], ID, 'root -> intermediate -> leaf')
  const int2 = pki.intermediate('sign3-int2', int)
  const deep = leaf('sign3-deep', int2)
  accepts(t, [deep, int2, int], ID, 'root -> int -> int2 -> leaf')
  accepts(t, [deep, int, int2], ID, 'intermediates in any order')
  rejects(t, [deep, int2], 'unknown-ca', 'missing intermediate')
})

rule(['SIGN-4'], 'a CA certificate presented as the client certificate', t => {
  const ca = pki.intermediate('sign4-ca', root, { ext: caExt({ subjectAltName: 'URI:spiffe://example.org/x' }) })
  rejects(t, [ca], 'not-svid', 'CA cert as leaf')
  rejects(t, [int], 'not-svid', 'intermediate (spiffe://example.org) as leaf')
})

rule(['BC-1'], 'pathLenConstraint', t => {
  const p0 = pki.intermediate('bc1-p0', root, { ext: caExt({ basicConstraints: 'critical,CA:true,pathlen:0' }) })
  accepts(t, [leaf('bc1-leaf', p0), p0], ID, 'pathlen:0 intermediate issuing a leaf')
  const below = pki.intermediate('bc1-below', p0)
  rejects(t, [leaf('bc1-too-deep', below), below, p0], 'bad-chain', 'pathlen:0 intermediate -> CA -> leaf')
  const below2 = pki.intermediate('bc1-below2', int)
  accepts(t, [leaf('bc1-control', below2), below2, int], ID, 'control: same shape without pathlen')
})

rule(['BC-2'], 'cA must be true on signers and false on leaves', t => {
  rejects(t, [leaf('bc2-leaf-ca', root, { basicConstraints: 'critical,CA:true' })], 'not-svid', 'leaf cA=true')
  const noCa = pki.intermediate('bc2-int-noca', root, { ext: caExt({ basicConstraints: 'critical,CA:false' }) })
  rejects(t, [leaf('bc2-leaf1', noCa), noCa], 'bad-chain', 'intermediate cA=false signing the leaf')
  const noBc = pki.intermediate('bc2-int-nobc', root, { ext: caExt({ basicConstraints: null }) })
  rejects(t, [leaf('bc2-leaf2', noBc), noBc], 'bad-chain', 'intermediate without basicConstraints signing the leaf')
})

// Our verifier enforces RFC 5280 URI name constraints (host match) on the leaf's SPIFFE ID.
rule(['NC-1', 'NC-2'], 'URI name constraints (behaviour: enforced)', t => {
  const nc = pki.intermediate('nc-int', root, { ext: caExt({ nameConstraints: 'critical,permitted;URI:example.org' }) })
  // The same root trusted for both domains, so only the name constraint can reject other.org.
  const federated = TrustBundle.fromSpiffeJson({ keys: [jwk(root)] }, 'other.org')
  rejects(t, [leaf('nc1-other', nc, { subjectAltName: 'URI:spiffe://other.org/w' }), nc], 'bad-chain', 'NC-1: permitted example.org, leaf spiffe://other.org/w', federated)
  accepts(t, [leaf('nc1-control', int, { subjectAltName: 'URI:spiffe://other.org/w' }), int], 'spiffe://other.org/w', 'control: same leaf via an unconstrained intermediate', federated)
  accepts(t, [leaf('nc2-ok', nc), nc], ID, 'NC-2: permitted example.org, leaf spiffe://example.org/workload')
  const ex = pki.intermediate('nc-excl', root, { ext: caExt({ nameConstraints: 'critical,excluded;URI:example.org' }) })
  rejects(t, [leaf('nc-excluded', ex), ex], 'bad-chain', 'excluded example.org')
})

rule(['KU-1'], 'leaf keyUsage must be present and critical', t => {
  rejects(t, [leaf('ku1-none', root, { keyUsage: null })], 'not-svid', 'no keyUsage')
  rejects(t, [leaf('ku1-noncrit', root, { keyUsage: 'digitalSignature' })], 'not-svid', 'non-critical keyUsage')
})

rule(['KU-2'], 'signing certificate without keyCertSign', t => {
  const crlOnly = pki.intermediate('ku2-int', root, { ext: caExt({ keyUsage: 'critical,cRLSign' }) })
  rejects(t, [leaf('ku2-leaf', crlOnly), crlOnly], 'bad-chain', 'intermediate keyUsage cRLSign only')
  const rootNoSign = pki.root('ku2-root', { ext: caExt({ keyUsage: 'critical,cRLSign' }) })
  t.throws(() => TrustBundle.fromPem(rootNoSign.pem), { code: 'GH_BUNDLE_INVALID' }, 'root without keyCertSign refused as an authority')
})

rule(['KU-3'], 'signing certificates may set cRLSign', t => {
  accepts(t, [leaf('ku3-leaf', int), int], ID, 'intermediate keyCertSign+cRLSign')
  const signOnly = pki.intermediate('ku3-int', root, { ext: caExt({ keyUsage: 'critical,keyCertSign' }) })
  accepts(t, [leaf('ku3-leaf2', signOnly), signOnly], ID, 'intermediate keyCertSign only')
})

rule(['KU-4'], 'leaf without digitalSignature', t => {
  rejects(t, [leaf('ku4-kenc', root, { keyUsage: 'critical,keyEncipherment' })], 'not-svid', 'keyEncipherment only')
  rejects(t, [leaf('ku4-kagr', root, { keyUsage: 'critical,keyAgreement' })], 'not-svid', 'keyAgreement only')
})

rule(['KU-5'], 'leaf may set keyEncipherment and keyAgreement', t => {
  accepts(t, [leaf('ku5', root, { keyUsage: 'critical,digitalSignature,keyEncipherment,keyAgreement' })], ID, 'digitalSignature+keyEncipherment+keyAgreement')
})

rule(['KU-6'], 'leaf with keyCertSign or cRLSign', t => {
  rejects(t, [leaf('ku6-certsign', root, { keyUsage: 'critical,digitalSignature,keyCertSign' })], 'not-svid', 'digitalSignature+keyCertSign')
  rejects(t, [leaf('ku6-crlsign', root, { keyUsage: 'critical,digitalSignature,cRLSign' })], 'not-svid', 'digitalSignature+cRLSign')
})

rule(['EKU-1'], 'leaf EKU is optional and may be critical', t => {
  accepts(t, [leaf('eku1-none', root, { extendedKeyUsage: null })], ID, 'no EKU')
  const crit = leaf('eku1-crit', root, { extendedKeyUsage: 'critical,serverAuth,clientAuth' })
  t.equal(parseCertificate(crit.der).profile.extKeyUsage?.critical, true, 'EKU is critical')
  accepts(t, [crit], ID, 'critical EKU serverAuth+clientAuth')
})

rule(['EKU-2'], 'leaf EKU present without both serverAuth and clientAuth', t => {
  rejects(t, [leaf('eku2-server', root, { extendedKeyUsage: 'serverAuth' })], 'not-svid', 'serverAuth only')
  rejects(t, [leaf('eku2-client', root, { extendedKeyUsage: 'clientAuth' })], 'not-svid', 'clientAuth only')
  rejects(t, [leaf('eku2-codesign', root, { extendedKeyUsage: 'codeSigning' })], 'not-svid', 'codeSigning')
})

rule(['EKU-3'], '(info) signer EKU is not chained (behaviour: ignored)', t => {
  const srv = pki.intermediate('eku3-int', root, { ext: caExt({ extendedKeyUsage: 'serverAuth' }) })
  accepts(t, [leaf('eku3-leaf', srv), srv], ID, 'intermediate EKU serverAuth only above a client leaf')
})

rule(['PATH-1'], 'RFC 5280 path validation', t => {
  const shortLeaf = leaf('path-short', root, {}, { days: 1 })
  accepts(t, [shortLeaf], ID, 'control: 1-day leaf now')
  rejects(t, [shortLeaf], 'expired', 'expired leaf (clock +2 days)', bundle, inDays(2))
  rejects(t, [shortLeaf], 'not-yet-valid', 'not-yet-valid leaf (clock -1 day)', bundle, inDays(-1))
  rejects(t, [leaf('path-rogue', rogue)], 'unknown-ca', 'leaf signed by a CA not in the bundle')

  const otherLeaf = leaf('path-other', otherRoot, { subjectAltName: 'URI:spiffe://other.org/w' })
  rejects(t, [otherLeaf], 'foreign-trust-domain', "leaf from another trust domain's CA")
  const both = TrustBundle.fromPem(root.pem + otherRoot.pem)
  accepts(t, [otherLeaf], 'spiffe://other.org/w', 'control: federated bundle accepts it', both)
  rejects(t, [leaf('path-cross', otherRoot)], 'unknown-ca', "example.org leaf signed by other.org's CA (federated bundle)", both)

  const broken = Buffer.from(leaf('path-broken', root).der)
  broken[broken.length - 1] = broken[broken.length - 1]! ^ 0x01
  rejects(t, [broken], 'unknown-ca', 'signature with a flipped byte')

  const shortInt = pki.intermediate('path-int-short', root, { days: 1 })
  const underShort = leaf('path-int-leaf', shortInt, {}, { days: 30 })
  accepts(t, [underShort, shortInt], ID, 'control: chain via 1-day intermediate now')
  rejects(t, [underShort, shortInt], 'expired', 'expired intermediate (clock +2 days)', bundle, inDays(2))

  const shortRoot = pki.root('path-root-short', { days: 1 })
  const shortRootBundle = TrustBundle.fromPem(shortRoot.pem)
  rejects(t, [leaf('path-root-leaf', shortRoot, {}, { days: 30 })], 'expired', 'expired root (clock +2 days)', shortRootBundle, inDays(2))
  rejects(t, [Buffer.from('not a certificate')], 'not-svid', 'unparseable DER')
})

rule(['VAL-1'], 'leaf used for authentication: cA false, no keyCertSign/cRLSign', t => {
  rejects(t, [leaf('val1-ca', root, { basicConstraints: 'critical,CA:true' })], 'not-svid', 'cA=true')
  rejects(t, [leaf('val1-certsign', root, { keyUsage: 'critical,digitalSignature,keyCertSign' })], 'not-svid', 'keyCertSign')
  rejects(t, [leaf('val1-crlsign', root, { keyUsage: 'critical,digitalSignature,cRLSign' })], 'not-svid', 'cRLSign')
})

rule(['VAL-2'], 'leaf SPIFFE ID scheme and path', t => {
  rejects(t, [leaf('val2-sparfe', root, { subjectAltName: 'URI:sparfe://example.org/workload' })], 'not-svid', 'sparfe://')
  rejects(t, [leaf('val2-https', root, { subjectAltName: 'URI:https://example.org/w' })], 'not-svid', 'https://')
  rejects(t, [leaf('val2-upper', root, { subjectAltName: 'URI:SPIFFE://example.org/w' })], 'not-svid', 'SPIFFE:// (upper case)')
  rejects(t, [leaf('val2-root', root, { subjectAltName: 'URI:spiffe://example.org' })], 'not-svid', 'spiffe://example.org (no path)')
})

rule(['BUN-1'], 'bundle JWKs whose use is not x509-svid are not X.509 authorities', t => {
  const r2 = pki.root('bun1-root2')
  const byR2 = leaf('bun1-leaf', r2)
  const ok = leaf('bun1-ok', root)
  for (const [what, entry] of [['use=jwt-svid', jwk(r2, { use: 'jwt-svid' })], ['no use', jwk(r2, { use: undefined })]] as const) {
    const only = TrustBundle.fromSpiffeJson({ keys: [entry] }, 'example.org')
    t.same(only.authoritiesFor('example.org'), [], `${what}: entry ignored`)
    rejects(t, [byR2], 'foreign-trust-domain', `${what} only`, only)
    const mixed = TrustBundle.fromSpiffeJson({ keys: [jwk(root), entry] }, 'example.org')
    rejects(t, [byR2], 'unknown-ca', `${what} beside an x509-svid entry`, mixed)
    accepts(t, [ok], ID, `${what}: the x509-svid entry still counts`, mixed)
  }
})

rule(['BUN-2'], 'x509-svid entries carry no kid', t => {
  const two = TrustBundle.fromPem(root.pem + rogue.pem)
  const doc = two.toSpiffeJson('example.org')
  t.equal(doc.keys.length, 2, 'one entry per root')
  for (const k of doc.keys) {
    t.notOk('kid' in k, 'toSpiffeJson emits no kid')
    t.equal(k.use, 'x509-svid')
  }
  // Consumer side, recorded: an entry carrying a kid is tolerated (the MUST NOT binds the publisher).
  const withKid = TrustBundle.fromSpiffeJson({ keys: [jwk(root, { kid: 'k1' })] }, 'example.org')
  accepts(t, [leaf('bun2-leaf', root)], ID, 'consumer tolerates kid', withKid)
})

rule(['BUN-3', 'BUN-5'], 'x509-svid entries without x5c, or with an empty one, are ignored', t => {
  const ok = leaf('bun35-leaf', root)
  for (const [what, entry] of [['no x5c', jwk(rogue, { x5c: undefined })], ['x5c []', jwk(rogue, { x5c: [] })]] as const) {
    const only = TrustBundle.fromSpiffeJson({ keys: [entry] }, 'example.org')
    t.same(only.authoritiesFor('example.org'), [], `${what}: entry ignored`)
    const mixed = TrustBundle.fromSpiffeJson({ keys: [entry, jwk(root)] }, 'example.org')
    t.equal(mixed.authoritiesFor('example.org').length, 1, `${what}: other entries still load`)
    accepts(t, [ok], ID, `${what} beside a good entry`, mixed)
  }
})

rule(['BUN-4', 'BUN-6'], 'exactly one certificate per x5c; consumers use only the first', t => {
  const ca2 = pki.root('bun6-ca2')
  const doc = TrustBundle.fromPem(root.pem + ca2.pem).toSpiffeJson('example.org')
  t.same(doc.keys.map(k => k.x5c), [[root.der.toString('base64')], [ca2.der.toString('base64')]], 'publisher emits one x5c value per entry')
  const b = TrustBundle.fromSpiffeJson({ keys: [{ ...jwk(root), x5c: [root.der.toString('base64'), ca2.der.toString('base64')] }] }, 'example.org')
  rejects(t, [leaf('bun6-by-ca2', ca2)], 'unknown-ca', 'leaf signed by CA2 of x5c=[CA1, CA2]', b)
  accepts(t, [leaf('bun6-by-ca1', root)], ID, 'leaf signed by CA1 of x5c=[CA1, CA2]', b)
})

t.test('key policy: RSA >= 2048 or ECDSA P-256/P-384 leaves only', async t => {
  rejects(t, [leaf('key-rsa1024', root, {}, { key: 'rsa-1024' })], 'weak-key', 'RSA-1024 leaf')
  rejects(t, [leaf('key-p521', root, {}, { key: 'ec-p521' })], 'weak-key', 'P-521 leaf')
  rejects(t, [leaf('key-ed25519', root, {}, { key: 'ed25519' })], 'weak-key', 'Ed25519 leaf')
  accepts(t, [leaf('key-rsa2048', root, {}, { key: 'rsa-2048' })], ID, 'RSA-2048 leaf')
  accepts(t, [leaf('key-p384', root, {}, { key: 'ec-p384' })], ID, 'P-384 leaf')
  const p384Int = pki.intermediate('key-p384-int', root, { key: 'ec-p384' })
  accepts(t, [leaf('key-under-p384', p384Int), p384Int], ID, 'leaf under a P-384 intermediate')
})

t.test('go-spiffe TestVerify cases', async t => {
  const good = leaf('go-good', int)
  // go-spiffe "no roots" is a bundle for the domain with no authorities; ours has no such state
  // (an empty per-domain set is no entry), so it is rejected as foreign-trust-domain, not unknown-ca.
  const empty = TrustBundle.fromSpiffeJson({ keys: [] }, 'example.org')
  const cases: Record<string, (t: Tap) => void> = {
    'empty chain': t => rejects(t, [], 'not-svid', 'empty chain'),
    'no roots': t => rejects(t, [good, int], 'foreign-trust-domain', 'bundle without authorities', empty),
    'no roots for leaf cert domain': t => rejects(t, [leaf('go-domain1', int, { subjectAltName: 'URI:spiffe://domain1.test/workload' }), int], 'foreign-trust-domain', 'leaf in domain1.test'),
    'bad leaf cert id': t => rejects(t, [leaf('go-sparfe', int, { subjectAltName: 'URI:sparfe://domain1.test/workload' }), int], 'not-svid', 'sparfe://'),
    'verification fails': t => rejects(t, [leaf('go-unknown', rogue)], 'unknown-ca', 'leaf from another CA'),
    'no URI SAN': t => rejects(t, [leaf('go-nouri', int, { subjectAltName: null }), int], 'not-svid', 'no URI SAN'),
    'more than one URI SAN': t => rejects(t, [leaf('go-dup', int, { subjectAltName: `URI:${ID},URI:${ID}` }), int], 'not-svid', 'dupURIs'),
    'leaf is CA': t => rejects(t, [leaf('go-ca', int, { basicConstraints: 'critical,CA:true' }), int], 'not-svid', 'leaf cA=true'),
    'leaf has KeyUsageCertSign': t => rejects(t, [leaf('go-certsign', int, { keyUsage: 'critical,digitalSignature,keyCertSign' }), int], 'not-svid', 'keyCertSign'),
    'leaf has KeyUsageCRLSign': t => rejects(t, [leaf('go-crlsign', int, { keyUsage: 'critical,digitalSignature,cRLSign' }), int], 'not-svid', 'cRLSign'),
    'with time': t => rejects(t, [good, int], 'expired', 'clock after notAfter', bundle, inDays(60)),
    success: t => { accepts(t, [good, int], ID, 'success') }
  }
  t.same(checklist.go_spiffe_verify_cases.map(c => c.name).filter(n => cases[n] === undefined), [], 'every go-spiffe case has a counterpart')
  for (const c of checklist.go_spiffe_verify_cases) {
    t.test(c.name, async t => { cases[c.name]?.(t) })
  }
})

// The go-spiffe PEMs are expired, self-issued and come without keys or a bundle (their
// "intermediates" do not sign the leaves), so they are checked property by property.
t.test('go-spiffe fixtures', async t => {
  t.equal(checklist.go_spiffe_fixtures.length, 9)
  for (const f of checklist.go_spiffe_fixtures) {
    for (const id of f.violates) covered.add(id)
    t.test(f.file, async t => {
      const certs = pemToDers(readFileSync(corpusPath('x509-svid', f.file), 'utf8')).map(parseCertificate)
      const [lf, signer] = certs
      if (lf === undefined) throw new Error(`${f.file} holds no certificate`)
      t.equal(certs.length, f.certs, 'certificate count')
      t.same(certs.flatMap(c => c.profile.subjectAltName?.value.uris ?? []), f.uri_sans, 'URI SANs as listed')
      const during = new Date(lf.notBefore.getTime() + 60_000)
      if (f.valid) {
        t.equal(leafSpiffeId(lf).toString(), f.uri_sans[0], 'leaf SPIFFE ID')
        t.doesNotThrow(() => checkLeafProfile(lf), 'leaf profile is valid')
        rejects(t, certs.map(c => c.der), 'expired', 'with the real clock', bundle)
        rejects(t, certs.map(c => c.der), 'unknown-ca', 'inside its validity, not signed by our root', bundle, during)
      } else if (signer === undefined) {
        t.throws(() => { leafSpiffeId(lf); checkLeafProfile(lf) }, { code: 'GH_SVID_INVALID', reason: 'not-svid' }, `leaf rejected (${f.violates.join(', ')})`)
      } else {
        t.doesNotThrow(() => { leafSpiffeId(lf); checkLeafProfile(lf) }, 'leaf itself is fine')
        const p = signer.profile
        t.ok(p.basicConstraints?.value.ca !== true || p.keyUsage?.value.has(KU.keyCertSign) !== true, 'signer lacks cA or keyCertSign')
        t.throws(() => TrustBundle.fromCertificates([signer], { defaultTrustDomain: 'example.org' }), { code: 'GH_BUNDLE_INVALID' }, 'signer refused as an authority')
      }
    })
  }
})

t.test('coverage: every checklist requirement has a subtest', async t => {
  const { requirements } = checklist
  t.equal(requirements.length, 32, 'checklist lists 32 requirements')
  const missing = (kinds: string[]): string[] => requirements.filter(r => kinds.includes(r.kind) && !covered.has(r.id)).map(r => r.id)
  t.same(missing(['negative', 'both']), [], 'negative/both requirements without a subtest')
  t.same(missing(['positive']), [], 'positive requirements without a subtest')
  t.same(missing(['info']), [], 'info requirements without a subtest')
  const known = new Set(requirements.map(r => r.id))
  t.same([...covered].filter(id => !known.has(id)), [], 'no subtest names an unknown requirement')
})
