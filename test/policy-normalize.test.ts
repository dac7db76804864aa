import t from 'tap'
import { normalizeTarget, isValidMethod } from '../src/policy/normalize.ts'
import { parsePolicy } from '../src/policy/load.ts'
import { compilePolicy } from '../src/policy/compile.ts'
import { decide } from '../src/policy/decide.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { readCorpusJson } from './helpers/corpora.ts'

const corpus = readCorpusJson('path-normalization', 'path_normalization_cases.json')

// The corpus's decision setting: a deny on /admin/** plus an allow on /**.
const policy = compilePolicy(parsePolicy(`
version: 1
rules:
  - name: everything
    from: ["spiffe://example.org/**"]
deny:
  - name: admin
    from: ["spiffe://example.org/**"]
    paths: ["/admin/**"]
`).policy)
const id = SpiffeId.parse('spiffe://example.org/ns/a/sa/b')
const caller = { id: id.toString(), trustDomain: id.trustDomain, segments: id.path.split('/').slice(1) }

type Outcome = { status: 400, reason: string } | { status: 200 | 403, path: string, target: string }
function outcome (input: string): Outcome {
  const n = normalizeTarget(input)
  if (!n.ok) return { status: 400, reason: n.reason }
  const d = decide(policy, { caller, method: 'GET', path: n.path, segments: n.segments })
  return { status: d.allowed ? 200 : 403, path: n.path, target: n.target }
}

const isAdmin = (p: string): boolean => p === '/admin' || p.startsWith('/admin/')
const stripQF = (p: string): string => p.split(/[?#]/)[0]!

t.test('istio cases: never allow what Istio sees as /admin; otherwise agree with DECODE_AND_MERGE_SLASHES or refuse', async t => {
  t.equal(corpus.istio_cases.length, 297)
  const tally = { 200: 0, 403: 0, 400: 0 }
  for (const c of corpus.istio_cases) {
    const got = outcome(c.input)
    tally[got.status]++
    const label = `${JSON.stringify(c.input)} (${c.group})`
    if (c.expected_status === 400) { t.equal(got.status, 400, `${label} is refused`); continue }
    const istio: string = c.normalized.DECODE_AND_MERGE_SLASHES ?? c.normalized.BASE
    const istioAdmin = Object.values(c.normalized as Record<string, string>).some(p => isAdmin(stripQF(p)))
    if (istioAdmin) t.not(got.status, 200, `${label}: Istio reaches /admin, we deny or refuse`)
    if (got.status !== 400) {
      // Same path as Istio, up to our one canonical spelling of percent-escapes.
      t.equal(got.path, (normalizeTarget(stripQF(istio)) as { path: string }).path, `${label}: same normalized path as Istio`)
      t.equal(got.status, isAdmin(got.path) ? 403 : 200, `${label}: decision follows the normalized path`)
    }
  }
  t.comment(`istio cases: ${tally[200]} allowed, ${tally[403]} denied, ${tally[400]} refused with 400`)
})

t.test('envoy path_utility cases', async t => {
  t.equal(corpus.envoy_cases.length, 50)
  for (const c of corpus.envoy_cases) {
    const got = outcome(c.input)
    const label = `${JSON.stringify(c.input)} (${c.test})`
    if (c.reject === true) { t.equal(got.status, 400, `${label}: refused`); continue }
    if (!String(c.input).startsWith('/') || String(c.input).includes('#')) {
      t.equal(got.status, 400, `${label}: not origin-form or has a fragment: refused`)
      continue
    }
    if (got.status === 400) {
      t.match(got.reason, /encoded slash|malformed/, `${label}: refused only for an encoded slash or malformed encoding`)
      continue
    }
    const expected = String(c.expected)
    const canonical = (p: string): string => (normalizeTarget(p) as { path: string }).path
    if (c.test.startsWith('RemoveQueryAndFragment')) t.equal(got.path, canonical(stripQF(expected)), label)
    else if (c.test.startsWith('MergeSlashes')) t.equal(got.target, expected, `${label}: query kept as sent`)
    else t.equal(got.path, canonical(expected), label)
  }
})

t.test('istio documentation examples', async t => {
  for (const c of corpus.istio_doc_cases) {
    const got = outcome(c.input)
    if (got.status === 400) t.match(got.reason, /encoded slash|fragment|NUL|origin-form/, `${c.input} refused: ${got.reason}`)
    else t.equal(got.path, stripQF(c.normalized), `${c.input} -> ${c.normalized}`)
  }
  for (const row of corpus.istio_doc_percent_decoding_table) {
    const sample = String(row.encoded).split('-')[0]!
    const got = normalizeTarget(`/x${sample}y`)
    if (row.result === null || row.enabled_by === 'DECODE_AND_MERGE_SLASHES') t.notOk(got.ok, `${sample}: refused`)
    else {
      const first = String(row.result).length > 1 ? String(row.result).split('-')[0] : String(row.result) // "0-9" is a range
      t.ok(got.ok && got.path === `/x${first}y`, `${sample} decodes to ${row.result}`)
    }
  }
})

t.test('targets and methods refused by our strict rules', async t => {
  for (const bad of ['*', 'http://example.org/admin', 'example.org:443', '', 'admin', '/a#b', '/a%2Fb', '/a%5cb', '/a%00', '/a\u0000b', '/a;x=1', '/..;/admin', '/a%zz', '/a%4', '/a b', '/caf\u00e9']) {
    t.notOk(normalizeTarget(bad).ok, `${JSON.stringify(bad)} refused`)
  }
  t.same(normalizeTarget('/a//b/./c/../d?x=%2F&y=1'), { ok: true, path: '/a/b/d', segments: ['a', 'b', 'd'], query: 'x=%2F&y=1', target: '/a/b/d?x=%2F&y=1' }, 'query kept verbatim for forwarding')
  t.equal((normalizeTarget('/%7Euser/%41') as { path: string }).path, '/~user/A', 'unreserved decoded')
  t.equal((normalizeTarget('/a%20b%c3%a9') as { path: string }).path, '/a%20b%C3%A9', 'other escapes kept, hex upper-cased')
  for (const spelling of ['/x:y', '/x%3ay', '/x%3Ay']) t.equal((normalizeTarget(spelling) as { path: string }).path, '/x:y', `${spelling}: one spelling`)
  t.notOk(normalizeTarget('/a%3Bb').ok === true && (normalizeTarget('/a%3Bb') as { path: string }).path.includes(';'), '%3B is never decoded into a path parameter')
  for (const m of ['GET', 'POST', 'M-SEARCH', 'PROPFIND']) t.ok(isValidMethod(m), m)
  for (const m of ['get', 'Get', 'G ET', '', 'GET\r', '123']) t.notOk(isValidMethod(m), JSON.stringify(m))
})

t.test('an exact-path deny covers the same path with a trailing slash and every spelling of it', async t => {
  const p = compilePolicy(parsePolicy(`
version: 1
rules:
  - name: all
    from: ["spiffe://example.org/**"]
deny:
  - name: no-admin
    from: ["spiffe://example.org/**"]
    paths: ["/admin", "/files/a:b"]
`).policy)
  for (const target of ['/admin', '/admin/', '/x/../admin/', '/%61dmin/', '/files/a:b', '/files/a%3ab', '/files/a%3Ab/']) {
    const n = normalizeTarget(target)
    t.ok(n.ok, target)
    if (!n.ok) continue
    t.equal(decide(p, { caller, method: 'GET', path: n.path, segments: n.segments }).decision, 'deny', `${target} is denied`)
  }
  const other = normalizeTarget('/administrator') as { path: string, segments: string[] }
  t.equal(decide(p, { caller, method: 'GET', path: other.path, segments: other.segments }).decision, 'allow', '/administrator is another path')
})
