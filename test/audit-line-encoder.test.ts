import t from 'tap'
import { encodeLine, type LineHeader } from '../src/audit/line-encoder.ts'
import { canonicalize } from '../src/audit/line-hash.ts'
import { prng } from './helpers/prng.ts'

// The decision log's own serializer (line-encoder.ts) must write exactly what RFC 8785 canonicalization
// of the same object gives (the `canonicalize` package): the verifier hashes the canonical form of
// each parsed line, so one differing byte would break every chain. Random lines of the real schema,
// with the strings and numbers where JSON serializers differ, and the shapes that take the general path.

const rnd = prng(20261206)
const pick = <T> (xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!

// Strings where escaping matters: quotes, backslashes, control characters, DEL, non-ASCII, emoji, lone surrogates, U+2028.
const ATOMS = ['a', 'Z', '/', '"', '\\', '\n', '\r', '\t', '\b', '\f', '\u0000', '\u001f', '\u007f', 'é', '€', '😀', '\ud800', '\udfff', '\u2028', '<', '%2F', ' ', '']
const str = (): string => Array.from({ length: Math.floor(rnd() * 12) }, () => pick(ATOMS)).join('')
// Numbers where ECMAScript's form matters: -0, exponents, fractions, integers past 2^53.
const num = (): number => pick([0, -0, 1, -1, 200, 0.1, 1.5e-7, 1e21, 123456789.125, 2 ** 53 + 2, Number.MAX_VALUE, Number.MIN_VALUE, Number.NaN, Number.POSITIVE_INFINITY, Math.round(rnd() * 1e6) / 1e3])
const value = (): unknown => pick([str, num, () => rnd() < 0.5, () => null, () => undefined])()

const FIELD_KEYS = ['requestId', 'decision', 'mode', 'enforced', 'rule', 'reason', 'caller', 'callee', 'method', 'path', 'rawPath', 'status', 'durationMs',
  'policyRevision', 'peerCertSerial', 'shadowDecision', 'shadowRule', 'error', 'kind', 'port', 'bytesIn', 'bytesOut', 'closeReason', 'quarantineReason']

const header = (): LineHeader => ({ chain: str(), seq: Math.floor(rnd() * 1e9), prev: str(), time: new Date(Math.floor(rnd() * 4e12)).toISOString(), msg: pick(['admit', 'decision', 'checkpoint']) })
// Through JSON first: what a verifier parses (undefined left out, a non-finite number null).
const expected = (h: LineHeader, body: Record<string, unknown>): string => canonicalize(JSON.parse(JSON.stringify({ ...body, level: 30, chain: h.chain, seq: h.seq, prev: h.prev, time: h.time, msg: h.msg })))

t.test('a line of the decision schema is its RFC 8785 canonical form', async t => {
  let differ = 0
  const CASES = 5000
  for (let i = 0; i < CASES; i++) {
    const body: Record<string, unknown> = {}
    for (const k of FIELD_KEYS) if (rnd() < 0.7) body[k] = value()
    const h = header()
    const got = encodeLine(h, body)
    if (got !== expected(h, body)) { differ++; if (differ <= 3) t.equal(got, expected(h, body), `case ${i}`) }
  }
  t.equal(differ, 0, `${CASES} random lines written exactly as canonicalize() writes them`)
})

t.test('shapes outside the fixed schema take the general path and are still canonical', async t => {
  const h: LineHeader = { chain: 'c', seq: 1, prev: '0'.repeat(64), time: '2026-12-06T00:00:00.000Z', msg: 'genesis' }
  const cases: Array<[string, Record<string, unknown>]> = [
    ['the genesis line (an array and an object)', { format: 'gatehouse-decision-log/2', x5c: ['AA==', 'AQ=='], follows: { seq: 3, chain: null, hash: 'ab' }, pid: 7 }],
    ['a key not in the schema', { requestId: 'r', zzz: 1, aaa: 'x' }],
    ['a key that sorts before every known one', { A: 1, requestId: 'r' }],
    ['a non-finite number in a line of the general shape', { durationMs: Number.NaN, follows: { seq: Number.POSITIVE_INFINITY } }],
    ['a body key named like a header key (the header wins)', { seq: 99, msg: 'forged', requestId: 'r' }],
    ['an empty body', {}]
  ]
  for (const [name, body] of cases) {
    t.equal(encodeLine(h, body), expected(h, body), name)
  }
  t.equal(JSON.parse(encodeLine(h, { seq: 99, msg: 'forged' })).seq, 1, 'a field cannot overwrite the chain header')
})

t.test('a string repeated from the line before (kept with its JSON form) is written as a new one would be', async t => {
  // The encoder keeps each place's last string and JSON text: a run of lines that repeat, change and
  // return to values, escaped or not, in one place or moved to another, must each be canonical.
  const h: LineHeader = { chain: 'c"1', seq: 1, prev: '0'.repeat(64), time: '2026-12-07T00:00:00.000Z', msg: 'decision' }
  const values = ['spiffe://td/ns/a/sa/b', 'a"b', 'a"b', 'spiffe://td/ns/a/sa/b', '', 'a\\b', 'a\\b', '\ud800', 'x']
  for (let i = 0; i < values.length; i++) {
    const body = { caller: values[i], callee: values[(i + 1) % values.length], rule: values[i], status: i % 2 === 0 ? 200 : 'x' }
    const line = { ...h, seq: i, chain: i % 3 === 0 ? h.chain : 'c' }
    t.equal(encodeLine(line, body), expected(line, body), `line ${i}`)
  }
})
