import { canonicalize } from './line-hash.ts'

// A decision-log line written straight in its RFC 8785 canonical form. The line's keys are a small
// fixed set (DecisionFields and the chain header), so they are sorted once here rather than per line,
// and each value is a string, a number, a boolean or null, whose canonical forms are exactly
// JSON.stringify's (RFC 8785 3.2.2 takes them from ECMAScript). Anything else (the genesis line's
// certificate chain, a key not listed) goes through the general `canonicalize`. This replaced pino
// serializing, JSON.parse and canonicalize per line: about a third of the log's share of a request
// (bench/README.md, issue 21). test/audit-line-encoder.test.ts holds it equal to canonicalize().

/** Every key a line of the log's hot kinds (admit, decision) can carry, header included, in canonical (UTF-16) order. */
const KNOWN_KEYS = [
  'bytesIn', 'bytesOut', 'caller', 'callee', 'chain', 'closeReason', 'decision', 'durationMs', 'enforced', 'error',
  'kind', 'level', 'method', 'mode', 'msg', 'path', 'peerCertSerial', 'policyRevision', 'port', 'prev', 'quarantineReason',
  'rawPath', 'reason', 'requestId', 'rule', 'seq', 'shadowDecision', 'shadowRule', 'status', 'time'
].sort()
const KNOWN: ReadonlySet<string> = new Set(KNOWN_KEYS)

/** What every line carries besides its own fields (what pino used to add: level 30, time, msg). */
export interface LineHeader { chain: string, seq: number, prev: string, time: string, msg: string }
type HeaderKey = keyof LineHeader | 'level'
const HEADER_KEYS: ReadonlySet<string> = new Set<HeaderKey>(['chain', 'seq', 'prev', 'time', 'msg', 'level'])

/** Each key's place in a line: its `"key":` (comma first, except for the first key written) and whether the header supplies it. */
const SLOTS = KNOWN_KEYS.map(key => ({ key, first: `"${key}":`, next: `,"${key}":`, header: HEADER_KEYS.has(key) ? key as HeaderKey : undefined }))

// A string needs JSON.stringify (escapes) only if it holds a quote, a backslash, a control character
// or a surrogate (a lone one is escaped); otherwise its JSON form is the string in quotes, without
// the call (about half of the encoder's time per line went to JSON.stringify, issue 21).
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/
const str = (v: string): string => NEEDS_ESCAPE.test(v) ? JSON.stringify(v) : `"${v}"`
// A non-finite number is written null, as JSON.stringify (and pino before) wrote it; String() of a finite number is its JSON form.
const json = (v: string | number | boolean | null): string =>
  typeof v === 'string' ? str(v) : typeof v === 'number' ? (Number.isFinite(v) ? String(v) : 'null') : String(v)

const primitive = (v: unknown): v is string | number | boolean | null => v === null || typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number'

const headerValue = (h: LineHeader, k: HeaderKey): string => k === 'level' ? '30' : k === 'seq' ? json(h.seq) : str(h[k])

/** The canonical JSON text of `{ ...body, ...header, level: 30 }` (the header wins a clash; body values undefined are left out). */
export function encodeLine (header: LineHeader, body: Readonly<Record<string, unknown>>): string {
  let fast = true
  let n = 0
  for (const k in body) {
    const v = body[k]
    if (v === undefined) continue
    n++
    if (!KNOWN.has(k) || !primitive(v)) { fast = false; break }
  }
  // The general path (rare lines: genesis, checkpoint): through JSON first, so undefined and non-finite values read as JSON would.
  if (!fast) return canonicalize(JSON.parse(JSON.stringify({ ...body, level: 30, chain: header.chain, seq: header.seq, prev: header.prev, time: header.time, msg: header.msg })))
  let out = '{'
  let first = true
  for (const slot of SLOTS) {
    let s: string
    if (slot.header !== undefined) s = headerValue(header, slot.header)
    else {
      if (n === 0) continue
      const v = body[slot.key]
      if (v === undefined) continue
      n--
      s = json(v as string | number | boolean | null)
    }
    out += first ? slot.first : slot.next
    out += s
    first = false
  }
  return `${out}}`
}
