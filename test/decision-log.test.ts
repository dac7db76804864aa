import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { startMesh } from './helpers/mesh.ts'
import { rawExchange, parseResponses, sleep } from './helpers/raw-tls.ts'
import { okReadsPolicy, GENESIS_PREV as GENESIS } from './helpers/audit-log.ts'
import { canonicalHash } from '../src/audit/line-hash.ts'
import { waitFor } from './helpers/wait.ts'

// The decision log: exactly one decision line per request, whatever became of it (allowed, denied,
// malformed, app down), an admit line before each request that was forwarded, every line with the
// fields docs/architecture.md lists, and a hash chain (seq 1..n, prev = sha256 of the previous
// line's RFC 8785 canonical form, which is what is written) that any change of a value breaks.

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'
const SERVER = 'spiffe://example.org/ns/server/sa/payments'

/** Index of the first line whose seq or prev does not follow from the lines before it, or -1 if the chain holds. */
function firstBreak (raw: readonly string[]): number {
  for (let i = 0; i < raw.length; i++) {
    let line: { seq?: unknown, prev?: unknown }
    try { line = JSON.parse(raw[i]!) as typeof line } catch { return i }
    const prev = i === 0 ? GENESIS : canonicalHash(JSON.parse(raw[i - 1]!))
    if (line.seq !== i + 1 || line.prev !== prev) return i
  }
  return -1
}

t.test('one decision line per request, every field present, and a hash chain that edits break', async t => {
  const mesh = await startMesh(t, {
    policy: okReadsPolicy(CLIENT),
    appHandler: (req, res) => {
      if (req.url === '/ok/boom') { req.socket.destroy(); return } // the app fails without answering
      res.end('fine')
    }
  })
  const lines = (): number => mesh.decisions.length
  const expectOneMore = async (before: number, what: string): Promise<Record<string, any>> => {
    await waitFor(() => lines() >= before + 1, 5000, `decision line for ${what}`)
    await sleep(50) // a second line, if any, would have been written by now
    t.equal(lines(), before + 1, `${what}: exactly one decision line`)
    return mesh.decisions.at(-1)!
  }

  let before = lines()
  const allowed = await mesh.request('/ok/item', { headers: { 'x-request-id': 'req-allow' } })
  t.equal(allowed.status, 200)
  t.match(await expectOneMore(before, 'allowed'), { requestId: 'req-allow', decision: 'allow', rule: 'ok-reads', reason: 'allow-rule', status: 200, path: '/ok/item' })

  before = lines()
  const denied = await mesh.request('/secret', { headers: { 'x-request-id': 'req-deny' } })
  t.equal(denied.status, 403)
  t.match(await expectOneMore(before, 'denied'), { requestId: 'req-deny', decision: 'deny', rule: null, reason: 'no-matching-rule', status: 403, path: '/secret' })

  before = lines()
  const malformed = await mesh.request('/a%2Fb', { headers: { 'x-request-id': 'req-bad' } })
  t.equal(malformed.status, 400)
  t.match(await expectOneMore(before, 'malformed target'), { requestId: 'req-bad', decision: 'deny', status: 400, path: null, rawPath: '/a%2Fb', reason: /^bad-request: encoded slash/ })

  before = lines()
  const failed = await mesh.request('/ok/boom', { headers: { 'x-request-id': 'req-502' } })
  t.equal(failed.status, 502)
  t.same(JSON.parse(failed.body), { error: 'GH_UPSTREAM_UNAVAILABLE', message: 'the app cannot be reached', requestId: 'req-502' })
  t.match(await expectOneMore(before, 'upstream failure'), { requestId: 'req-502', decision: 'allow', status: 502, error: /^upstream-unavailable: / })

  // A request the HTTP parser itself refuses (lower-case method) is answered 400 by the clientError
  // handler: a decision line too (method and path unknown), plus the operational log line.
  before = lines()
  const ex = await rawExchange(mesh, 'get /ok/item HTTP/1.1\r\nHost: a\r\n\r\n')
  t.same(parseResponses(ex.response).map(r => r.status), [400], 'method "get" is refused with 400')
  await waitFor(() => lines() >= before + 1, 10_000, 'the decision line for the parser-level 400')
  await sleep(50) // a second line, if any, would have been written by now
  t.equal(lines(), before + 1, 'a parser-level 400 from an authenticated peer gets a decision line too')
  t.match(mesh.decisions.at(-1), { decision: 'deny', status: 400, method: '', path: null, reason: 'bad-request: HPE_INVALID_METHOD', error: 'HPE_INVALID_METHOD', caller: CLIENT })
  t.ok(mesh.logs.some(l => l.event === 'http.rejected' && l.code === 'HPE_INVALID_METHOD' && l.caller === CLIENT), 'it is in the operational log, with the caller')

  // Every line: all the decision-line fields (src/audit/record.ts DecisionFields, plus seq, prev, msg), with the right types.
  const leaf = new X509Certificate(mesh.client.chainPem)
  const required = ['requestId', 'decision', 'mode', 'rule', 'reason', 'caller', 'callee', 'method', 'path', 'rawPath', 'status', 'durationMs', 'policyRevision', 'peerCertSerial', 'seq', 'prev', 'msg']
  for (const [i, d] of mesh.decisions.entries()) {
    t.same(required.filter(k => !(k in d)), [], `line ${i + 1}: every field is present`)
    t.match(d, {
      msg: 'decision',
      requestId: String,
      decision: /^(allow|deny)$/,
      mode: 'enforce',
      reason: String,
      caller: CLIENT,
      callee: SERVER,
      method: i === 4 ? '' : 'GET',
      rawPath: String,
      status: Number,
      durationMs: Number,
      policyRevision: /^sha256:[0-9a-f]+$/,
      peerCertSerial: leaf.serialNumber.toLowerCase(),
      seq: Number,
      prev: /^[0-9a-f]{64}$/
    }, `line ${i + 1}: field values`)
    t.ok(d.durationMs >= 0, `line ${i + 1}: durationMs is not negative`)
  }

  // The chain: a genesis line naming the writer, then the five decisions, each forwarded request's
  // admit line (written before it reached the app) ahead of its decision line.
  const raw = [...mesh.rawAuditLines]
  const recs = raw.map(l => JSON.parse(l) as Record<string, any>)
  const admits = recs.filter(r => r.msg === 'admit')
  t.equal(raw.length, 6 + admits.length, 'a genesis line, five decision lines and the admit lines')
  t.same(admits.map(a => a.requestId), recs.filter(r => r.msg === 'decision' && r.decision === 'allow').map(d => d.requestId), 'one admit line per allowed (forwarded) request')
  for (const a of admits) {
    const d = recs.find(r => r.msg === 'decision' && r.requestId === a.requestId)!
    t.ok(a.seq < d.seq, `admit of ${String(a.requestId)} (seq ${String(a.seq)}) before its decision (seq ${String(d.seq)})`)
    t.match(a, { caller: CLIENT, callee: SERVER, method: 'GET', path: d.path, rule: d.rule })
  }
  t.match(recs[0], { msg: 'genesis', seq: 1, spiffeId: SERVER, format: 'gatehouse-decision-log/2', chain: /^[A-Za-z0-9_-]{16}$/, follows: null })
  t.ok(recs.every(r => r.chain === recs[0]!.chain), 'every line carries the chain id')
  t.equal(firstBreak(raw), -1, 'the chain verifies: seq 1..n, each prev the sha256 of the line before')
  t.equal((JSON.parse(raw[0]!) as { prev: string }).prev, GENESIS, 'the first prev is 64 zeros')

  const edited = [...raw]
  const deniedAt = recs.findIndex(r => r.status === 403)
  edited[deniedAt] = edited[deniedAt]!.replace('"status":403', '"status":200')
  t.not(edited[deniedAt], raw[deniedAt], 'the copy was edited')
  t.equal(firstBreak(edited), deniedAt + 1, 'editing a line breaks the chain at the next one')

  const removed = raw.filter((_, i) => i !== 2)
  t.equal(firstBreak(removed), 2, 'removing a line breaks the chain where it was')

  const swapped = [raw[0]!, raw[2]!, raw[1]!, raw[3]!]
  t.equal(firstBreak(swapped), 1, 'swapping two lines breaks the chain')

  const truncatedHead = raw.slice(1)
  t.equal(firstBreak(truncatedHead), 0, 'dropping the first line breaks the chain at the start')

  // What a log shipper does: parse and re-emit with other key order and spacing. The value is the same, so is its hash.
  const reserialized = recs.map(r => JSON.stringify(Object.fromEntries(Object.entries(r).reverse()), null, 1).replace(/\n/g, ''))
  t.not(reserialized[3], raw[3], 'the shipper\'s spelling differs')
  t.equal(firstBreak(reserialized), -1, 'the chain still holds: prev covers the canonical form, not the bytes')
})
