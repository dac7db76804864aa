import t, { type Test } from 'tap'
import { startMesh, type Mesh } from './helpers/mesh.ts'
import { readCorpusJson } from './helpers/corpora.ts'
import { rawExchange, parseResponses, sleep } from './helpers/raw-tls.ts'

// Every case of the HTTP request-smuggling corpus, sent byte for byte over an authorized mTLS
// connection (the policy allows the client everything, so only the HTTP layer can refuse).
// 'reject' cases must get a 400/431 and no request may reach the app's handler; the normalize kinds
// may be refused or forwarded, but the app must never see more requests than the client sent
// request lines. Bodies stream, so when the header block is valid and only the body's framing is
// bad, the headers have already gone to the app: that request must end aborted, never complete.

interface Case { id: string, category: string, raw_b64: string, wire_b64?: string, expected_safe_outcome: 'reject' | 'normalize' | 'normalize_or_reject' | 'reject_or_normalize' }
interface Corpus { cases: Case[] }

const cases: Array<Case & { file: string }> = []
for (const file of ['smuggling_cases.json', 'smuggling_cases_extra.json']) {
  for (const c of readCorpusJson<Corpus>('http-smuggling', file).cases) cases.push({ ...c, file })
}

/** Request lines the client sent (a line that looks like `METHOD target HTTP/x.y`, whatever the line ending). */
function requestLinesSent (bytes: Buffer): number {
  return bytes.toString('latin1').split(/\r\n|\n|\r/).filter(l => /^[A-Za-z]+ \S+ HTTP\/\d\.\d/.test(l)).length
}

/** The same bytes with `Host: a` added after the request line, so Node's requireHostHeader is not what refuses. */
function withHost (bytes: Buffer): Buffer {
  const s = bytes.toString('latin1')
  const m = /\r\n|\n|\r/.exec(s)
  if (m === null) return bytes
  return Buffer.from(`${s.slice(0, m.index)}${m[0]}Host: a${m[0]}${s.slice(m.index + m[0].length)}`, 'latin1')
}

interface Arrival { method: string, url: string, bodyBytes: number, complete: boolean }

/**
 * Every request whose headers reach the app, as soon as they arrive (mesh.app.seen only records
 * requests whose body ended). A streaming proxy forwards the headers before it has parsed the body,
 * so a body-level framing error shows up here as an arrival that never completes.
 */
function watchArrivals (mesh: Mesh): Arrival[] {
  const arrivals: Arrival[] = []
  mesh.app.server.prependListener('request', (req) => {
    const a: Arrival = { method: req.method ?? '', url: req.url ?? '', bodyBytes: 0, complete: false }
    arrivals.push(a)
    req.on('data', (c: Buffer) => { a.bodyBytes += c.length })
    req.on('end', () => { a.complete = true })
  })
  return arrivals
}

const cell = (s: string, n: number): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s).padEnd(n)

async function runCorpus (t: Test, variant: 'as-is' | 'with-host'): Promise<void> {
  const mesh = await startMesh(t)
  const arrivals = watchArrivals(mesh)
  const rows: string[] = ['app = requests completed at the app / requests whose headers reached it; sent = request lines the client sent', `${cell('case', 34)} ${cell('expected', 19)} ${cell('statuses', 10)} ${cell('app', 5)} ${cell('sent', 4)} what the app saw`]
  const tally: Record<string, number> = {}
  for (const c of cases) {
    const original = Buffer.from(c.wire_b64 ?? c.raw_b64, 'base64')
    const bytes = variant === 'with-host' ? withHost(original) : original
    const sent = requestLinesSent(bytes)
    const before = arrivals.length
    const seenBefore = mesh.app.seen.length
    const ex = await rawExchange(mesh, bytes)
    await sleep(30) // give anything forwarded a moment to land at (or be aborted at) the app
    const got = arrivals.slice(before)
    const completed = got.filter(a => a.complete)
    const statuses = parseResponses(ex.response).map(r => r.status)
    const first = statuses[0]
    const refused = first !== undefined && first >= 400 && first < 500
    const outcome = refused
      ? (completed.length > 0 ? 'REJECTED-BUT-EXECUTED' : got.length > 0 ? 'rejected-after-headers-forwarded(aborted)' : 'rejected')
      : completed.length > 0 ? 'forwarded' : statuses.length === 0 ? `no-response(${ex.error ?? 'closed'})` : 'other'
    tally[`${c.expected_safe_outcome}:${outcome}`] = (tally[`${c.expected_safe_outcome}:${outcome}`] ?? 0) + 1
    rows.push(`${cell(c.id, 34)} ${cell(c.expected_safe_outcome, 19)} ${cell(statuses.join(',') || '-', 10)} ${cell(`${completed.length}/${got.length}`, 5)} ${cell(String(sent), 4)} ${got.map(a => `${a.method} ${a.url} body=${a.bodyBytes}${a.complete ? '' : ' (aborted)'}`).join('; ')}`)

    const name = `${c.id} (${c.category})`
    t.ok(got.length <= sent, `${name}: the app saw ${got.length} request(s) for ${sent} request line(s) sent`)
    t.ok(got.length <= 1, `${name}: never two requests at the app for one probe`)
    if (c.expected_safe_outcome === 'reject') {
      t.ok(refused, `${name}: refused with 4xx (got ${statuses.join(',') || 'no response'})`)
      t.ok(first === 400 || first === 431, `${name}: 400 or 431`)
      t.equal(mesh.app.seen.length, seenBefore, `${name}: no request reached the app's handler`)
      t.equal(completed.length, 0, `${name}: no request completed at the app`)
    } else {
      t.ok(refused || completed.length === 1, `${name}: either refused with 4xx or forwarded once (statuses ${statuses.join(',') || 'none'})`)
      if (refused) t.equal(completed.length, 0, `${name}: a refused request never completes at the app`)
      else t.equal(first, 200, `${name}: the forwarded request was answered by the app`)
    }
  }
  t.comment(`smuggling corpus, ${variant}: ${cases.length} cases\n${rows.join('\n')}`)
  t.comment(`tally (${variant}): ${JSON.stringify(tally)}`)

  // Still healthy after all of that.
  const ok = await mesh.request('/after-the-corpus')
  t.equal(ok.status, 200, 'a normal request still succeeds afterwards')
  t.equal(mesh.app.seen.at(-1)?.url, '/after-the-corpus')
}

t.test('smuggling corpus sent as-is over authorized mTLS', async t => {
  t.ok(cases.length >= 53, `${cases.length} corpus cases loaded`)
  await runCorpus(t, 'as-is')
})

t.test('smuggling corpus with a Host header added (the parser, not requireHostHeader, decides)', async t => {
  await runCorpus(t, 'with-host')
})

t.test('a chunked body on GET, DELETE or OPTIONS reaches the app as that request\'s body, never as a second request', async t => {
  // Transfer-Encoding is hop-by-hop: the sidecar drops it and must frame the body again. Node's
  // http client only chunks POST/PUT/PATCH by default; without explicit framing a GET body went
  // onto the app connection raw and the app read it as a new, unauthorized request.
  const mesh = await startMesh(t, {
    policy: `version: 1
rules:
  - name: public-only
    from: ["spiffe://example.org/ns/client/sa/caller"]
    paths: ["/public"]
`
  })
  const arrivals = watchArrivals(mesh)
  const inner = 'GET /admin HTTP/1.1\r\nHost: a\r\n\r\n'
  const body = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`
  for (const method of ['GET', 'DELETE', 'OPTIONS', 'POST']) {
    const before = arrivals.length
    const ex = await rawExchange(mesh, `${method} /public HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${body}`, { idleMs: 250 })
    await sleep(200) // a second (smuggled) request would have reached the app by now
    const got = arrivals.slice(before)
    t.same(parseResponses(ex.response).map(r => r.status), [200], `${method}: one response, 200`)
    t.same(got.map(a => `${a.method} ${a.url}`), [`${method} /public`], `${method}: the app saw exactly the one authorized request`)
    t.equal(mesh.app.seen.at(-1)?.body, inner, `${method}: the smuggled bytes arrived as the body`)
  }
  t.notOk(mesh.app.seen.some(s => s.url === '/admin'), 'no /admin request ever reached the app')
  t.equal(mesh.decisions.length, 4, 'one decision line per request')

  // The request-line count this file relies on: two pipelined requests are two at the app.
  const before = arrivals.length
  const ex = await rawExchange(mesh, 'GET /public?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /public?n=2 HTTP/1.1\r\nHost: a\r\n\r\n', { idleMs: 250 })
  await sleep(100) // a third request would have reached the app by now
  t.same(parseResponses(ex.response).map(r => r.status), [200, 200], 'two pipelined requests, two answers')
  t.same(arrivals.slice(before).map(a => a.url), ['/public?n=1', '/public?n=2'], 'and two requests at the app, in order')
})
