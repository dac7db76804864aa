import t, { type Test } from 'tap'
import { TrustBundle } from '../src/spiffe/bundle.ts'
import { parseCertificate } from '../src/x509/certificate.ts'
import { svidChecklistBench, inDays, SVID_ID as ID } from './helpers/openssl-pki.ts'

// The X.509-SVID checklist (spiffe/spiffe standards/X509-SVID.md + go-spiffe's cases) run against
// verifyX509Svid with certificates made by the openssl CLI, the leaf's profile: its URI SAN and
// SPIFFE ID, key usage, extended key usage, key policy, and go-spiffe's TestVerify cases. Each negative
// rule gets a certificate that violates exactly that rule, each positive rule one that must be
// accepted. Signers, chains and bundles: svid-checklist-chain.test.ts, whose last subtest checks that
// every requirement id of the checklist has a subtest in one of the two files.

const { checklist, pki, root, bundle, int, rogue, leaf, rejects, accepts, rule } = svidChecklistBench(t)

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

rule(['KU-1'], 'leaf keyUsage must be present and critical', t => {
  rejects(t, [leaf('ku1-none', root, { keyUsage: null })], 'not-svid', 'no keyUsage')
  rejects(t, [leaf('ku1-noncrit', root, { keyUsage: 'digitalSignature' })], 'not-svid', 'non-critical keyUsage')
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
  const cases: Record<string, (t: Test) => void> = {
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
