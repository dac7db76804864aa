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

/** What every line carries besides its own fields (what pino used to add: level 30, time, msg). */
export interface LineHeader { chain: string, seq: number, prev: string, time: string, msg: string }
type HeaderKey = keyof LineHeader | 'level'
const HEADER_KEYS: ReadonlySet<string> = new Set<HeaderKey>(['chain', 'seq', 'prev', 'time', 'msg', 'level'])

/** Each known key's place in canonical order; a header key's is -1 in a body (the header wins a clash). */
const PLACE: ReadonlyMap<string, number> = new Map(KNOWN_KEYS.map((key, i) => [key, HEADER_KEYS.has(key) ? -1 : i]))
const FIRST = KNOWN_KEYS.map(key => `"${key}":`)
const NEXT = KNOWN_KEYS.map(key => `,"${key}":`)
const placeOf = (key: HeaderKey): number => KNOWN_KEYS.indexOf(key)
const CHAIN = placeOf('chain')
const LEVEL = placeOf('level')
const MSG = placeOf('msg')
const PREV = placeOf('prev')
const SEQ = placeOf('seq')
const TIME = placeOf('time')

// A string needs JSON.stringify (escapes) only if it holds a quote, a backslash, a control character
// or a surrogate (a lone one is escaped); otherwise its JSON form is the string in quotes, without
// the call (about half of the encoder's time per line went to JSON.stringify, issue 21).
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/
const str = (v: string): string => NEEDS_ESCAPE.test(v) ? JSON.stringify(v) : `"${v}"`
// A non-finite number is written null, as JSON.stringify (and pino before) wrote it; String() of a finite number is its JSON form.
const num = (v: number): string => Number.isFinite(v) ? String(v) : 'null'

// Encoding is synchronous, so one set of arrays serves every line: each place's JSON text for the
// line being written (emptied as it is written), and the last string seen there with its JSON text.
// Most of a line's strings (the chain id, caller, callee, rule, reason, policy revision) are those
// of the line before, and comparing is cheaper than the escape test (the tests were half of what
// encoding cost, issue 21).
const text: Array<string | undefined> = KNOWN_KEYS.map(() => undefined)
const lastString: string[] = KNOWN_KEYS.map(() => '')
const lastText: string[] = KNOWN_KEYS.map(() => '""')

function place (i: number, v: string | number | boolean | null): void {
  if (typeof v === 'string') {
    if (v !== lastString[i]) { lastString[i] = v; lastText[i] = str(v) }
    text[i] = lastText[i]
  } else text[i] = typeof v === 'number' ? num(v) : String(v)
}

/** The canonical JSON text of `{ ...body, ...header, level: 30 }` (the header wins a clash; body values undefined are left out). */
export function encodeLine (header: LineHeader, body: Readonly<Record<string, unknown>>): string {
  for (const k in body) {
    const v = body[k]
    if (v === undefined) continue
    const i = PLACE.get(k)
    if (i === undefined || (v !== null && typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean')) {
      text.fill(undefined)
      // The general path (rare lines: genesis, checkpoint): through JSON first, so undefined and non-finite values read as JSON would.
      return canonicalize(JSON.parse(JSON.stringify({ ...body, level: 30, chain: header.chain, seq: header.seq, prev: header.prev, time: header.time, msg: header.msg })))
    }
    if (i >= 0) place(i, v)
  }
  place(CHAIN, header.chain)
  place(MSG, header.msg)
  place(PREV, header.prev)
  place(SEQ, header.seq)
  place(TIME, header.time)
  text[LEVEL] = '30'
  let out = '{'
  let first = true
  for (let i = 0; i < text.length; i++) {
    const s = text[i]
    if (s === undefined) continue
    text[i] = undefined
    out += first ? FIRST[i]! : NEXT[i]!
    out += s
    first = false
  }
  return `${out}}`
}
