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

// A non-finite number is written null, as JSON.stringify (and pino before) wrote it.
const primitive = (v: unknown): boolean => v === null || typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number'

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
  for (const k of KNOWN_KEYS) {
    let v: unknown
    switch (k) {
      case 'chain': v = header.chain; break
      case 'level': v = 30; break
      case 'msg': v = header.msg; break
      case 'prev': v = header.prev; break
      case 'seq': v = header.seq; break
      case 'time': v = header.time; break
      default:
        if (n === 0) continue
        v = body[k]
        if (v === undefined) continue
        n--
    }
    out += `${first ? '"' : ',"'}${k}":${JSON.stringify(v)}`
    first = false
  }
  return `${out}}`
}
