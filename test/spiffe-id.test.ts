import t from 'tap'
import { SpiffeId, parseTrustDomain, pathProblem } from '../src/spiffe/id.ts'
import { readCorpusJson } from './helpers/corpora.ts'

const corpus = readCorpusJson('spiffe-id', 'spiffe_id_vectors.json')

// Upper-case scheme/trust domain: our policy is go-spiffe's strict one. The other side is tested
// too: lower-cased as java/py/rust-spiffe would, the same input parses.
function lowerSchemeAndTrustDomain (input: string): string {
  const m = /^([a-zA-Z]+:\/\/)([^/]*)(.*)$/s.exec(input)
  return m === null ? input : `${m[1]!.toLowerCase()}${m[2]!.toLowerCase()}${m[3]}`
}

t.test('id_cases: go-spiffe verdict, trust domain and path', async t => {
  t.equal(corpus.id_cases.length, 103)
  for (const c of corpus.id_cases) {
    const got = SpiffeId.tryParse(c.input)
    t.equal(got !== undefined, c.valid, `${JSON.stringify(c.input)}: ${c.reason}`)
    if (c.valid === true && got !== undefined) {
      if (c.expect_trust_domain !== undefined) t.equal(got.trustDomain, c.expect_trust_domain, 'trust domain')
      if (c.expect_path !== undefined) t.equal(got.path, c.expect_path, 'path')
      t.equal(got.toString(), c.input, 'round-trips unchanged')
    }
    if (c.valid_if_case_normalized === true) {
      t.ok(SpiffeId.tryParse(lowerSchemeAndTrustDomain(c.input)), `${c.input} parses once lower-cased`)
    }
  }
})

t.test('trust_domain_cases', async t => {
  t.equal(corpus.trust_domain_cases.length, 63)
  for (const c of corpus.trust_domain_cases) {
    let got: string | undefined
    try { got = parseTrustDomain(c.input) } catch { got = undefined }
    t.equal(got !== undefined, c.valid, `${JSON.stringify(c.input)}: ${c.reason}`)
    if (c.valid === true && c.expect_name !== undefined) t.equal(got, c.expect_name)
    if (c.valid_if_case_normalized === true) {
      const lowered = c.input.includes(':/') ? lowerSchemeAndTrustDomain(c.input) : c.input.toLowerCase()
      t.doesNotThrow(() => parseTrustDomain(lowered), `${c.input} parses once lower-cased`)
    }
  }
})

t.test('path_cases', async t => {
  t.equal(corpus.path_cases.length, 22)
  for (const c of corpus.path_cases) {
    t.equal(pathProblem(c.path) === undefined, c.valid, `${JSON.stringify(c.path)}: ${c.reason}`)
  }
})

t.test('length_cases', async t => {
  t.equal(corpus.length_cases.length, 5)
  for (const c of corpus.length_cases) {
    if (c.trust_domain !== undefined) {
      let ok = true
      try { parseTrustDomain(c.trust_domain) } catch { ok = false }
      t.equal(ok, c.valid, `trust domain of ${c.length} bytes`)
    } else if (c.valid === null) {
      // Implementation-defined (2049 bytes): we refuse what the spec says must not be generated.
      t.equal(SpiffeId.tryParse(c.input), undefined, `ID of ${c.length} bytes is refused`)
    } else {
      t.equal(SpiffeId.tryParse(c.input) !== undefined, c.valid, `ID of ${c.length} bytes`)
    }
  }
})

t.test('charset_sweep: every code point in trust domain and path', async t => {
  t.equal(corpus.charset_sweep.length, 510)
  let checked = 0
  for (const c of corpus.charset_sweep) {
    t.equal(SpiffeId.tryParse(c.input) !== undefined, c.valid, `U+${c.codepoint.toString(16)} in ${c.component}`)
    if (c.valid_if_case_normalized === true) {
      t.ok(SpiffeId.tryParse(lowerSchemeAndTrustDomain(c.input)), 'parses once lower-cased')
    }
    checked++
  }
  t.equal(checked, 510)
})

t.test('value type helpers', async t => {
  const id = SpiffeId.forServiceAccount('cluster.local', 'payments', 'api')
  t.equal(id.toString(), 'spiffe://cluster.local/ns/payments/sa/api')
  t.ok(id.memberOf('cluster.local'))
  t.notOk(id.isRoot)
  t.ok(SpiffeId.parse('spiffe://cluster.local').isRoot)
  t.ok(id.equals(SpiffeId.parse('spiffe://cluster.local/ns/payments/sa/api')))
  t.throws(() => SpiffeId.forServiceAccount('cluster.local', 'pay/ments', 'api'), { code: 'GH_SPIFFE_ID_INVALID' })
  t.throws(() => SpiffeId.parse('https://cluster.local/x'), { code: 'GH_SPIFFE_ID_INVALID' })
})
