import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { leafSpiffeId, checkLeafProfile } from '../src/spiffe/svid.ts'
import { TrustBundle } from '../src/spiffe/bundle.ts'
import { parseCertificate, pemToDers } from '../src/x509/certificate.ts'
import { KU } from '../src/x509/oids.ts'
import { corpusPath } from './helpers/corpora.ts'
import { svidChecklistBench, caExt, inDays, SVID_ID as ID } from './helpers/openssl-pki.ts'

// The X.509-SVID checklist (spiffe/spiffe standards/X509-SVID.md + go-spiffe's cases) run against
// verifyX509Svid with certificates made by the openssl CLI, the signing side: signing certificates,
// basic constraints, name constraints, key usage of signers, RFC 5280 path validation, bundle JWKs
// and the go-spiffe fixtures. Each negative rule gets a certificate that violates exactly that rule,
// each positive rule one that must be accepted. The leaf's profile: svid-checklist-leaf.test.ts. The
// last subtest checks that every requirement id of the checklist has a subtest in one of the two files.

const { checklist, pki, root, bundle, int, rogue, otherRoot, leaf, rejects, accepts, jwk, covered, rule } = svidChecklistBench(t)

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
  // The rules of the sibling files (svid-checklist-leaf.test.ts) run there: their ids are read from their rule([...]) calls.
  const here = fileURLToPath(new URL('.', import.meta.url))
  const siblings = readdirSync(here).filter(f => /^svid-checklist-.+\.test\.ts$/.test(f) && f !== 'svid-checklist-chain.test.ts')
  if (siblings.length === 0) throw new Error(`no svid-checklist-*.test.ts next to svid-checklist-chain.test.ts in ${here}`)
  for (const f of siblings) {
    for (const [, ids] of readFileSync(`${here}/${f}`, 'utf8').matchAll(/^rule\(\[([^\]]*)\]/gm)) {
      for (const [, id] of ids!.matchAll(/'([^']+)'/g)) covered.add(id!)
    }
  }
  t.equal(requirements.length, 32, 'checklist lists 32 requirements')
  const missing = (kinds: string[]): string[] => requirements.filter(r => kinds.includes(r.kind) && !covered.has(r.id)).map(r => r.id)
  t.same(missing(['negative', 'both']), [], 'negative/both requirements without a subtest')
  t.same(missing(['positive']), [], 'positive requirements without a subtest')
  t.same(missing(['info']), [], 'info requirements without a subtest')
  const known = new Set(requirements.map(r => r.id))
  t.same([...covered].filter(id => !known.has(id)), [], 'no subtest names an unknown requirement')
})
