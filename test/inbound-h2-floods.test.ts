import t from 'tap'
import { startMesh } from './helpers/mesh.ts'
import { sleep } from './helpers/raw-tls.ts'
import * as h from './helpers/h2-frames.ts'
import { watchApp, attacker, honest, stillServes, outcome, refused } from './helpers/h2-attack.ts'

// HTTP/2's own attack surface on the inbound listener (floods here, malformed headers in
// inbound-h2-headers.test.ts), over mTLS with a valid client SVID that the
// policy allows everything (so only the HTTP/2 layer can refuse). Frames are written by hand
// (helpers/h2-frames.ts). Each attack must: reach the app with nothing, be answered (GOAWAY, an
// RST_STREAM, or a refusal on the stream with its decision line), and leave the sidecar serving
// everyone else. Most of these are refused inside Node's nghttp2 before any JavaScript sees a
// stream: then there is no decision line and the RST/GOAWAY code is what the test can observe.
// What the sidecar did is printed as a comment per case.

const pastGoaway = (path: unknown, goaways: Array<{ lastStreamId: number, conn: number }>): boolean => {
  const [conn, id] = String(path).split('/').slice(-2).map(Number)
  return goaways.some(g => g.conn === conn && id! > g.lastStreamId)
}

t.test('rapid reset (CVE-2023-44487): thousands of streams opened and cancelled at once', async t => {
  const mesh = await startMesh(t)
  const app = watchApp(mesh)
  const good = honest(t, mesh)
  t.equal(await good.get('/warm-up'), 200, 'an honest caller is served before the flood')

  // The honest caller keeps sending requests on its own connection while the flood runs.
  let flooding = true
  const honestStatuses: Array<number | string> = []
  const honestLoop = (async () => {
    for (let i = 0; flooding || i < 5; i++) {
      try { honestStatuses.push(await good.get(`/honest/${i}`)) } catch (err) { honestStatuses.push((err as Error).message) }
    }
  })()

  // Like a real attacker, reconnect when a connection is ended, so the flood outlasts one GOAWAY.
  const pairs = 5000
  let streams = 0
  const goaways: Array<{ lastStreamId: number, code: number, conn: number }> = []
  for (let n = 0; n < 4; n++) {
    const a = await attacker(t, mesh)
    // HEADERS (END_STREAM) and RST_STREAM(CANCEL) written back to back.
    const written = await a.flood(pairs, i => Buffer.concat([h.headers(1 + 2 * i, h.request(`/attack/rr/${n}/${1 + 2 * i}`)), h.rstStream(1 + 2 * i, h.E.CANCEL)]))
    await a.until(() => a.closed || a.goaway() !== undefined, 3000)
    streams += written
    const g = a.goaway()
    if (g !== undefined) goaways.push({ ...g, conn: n })
    t.comment(`rapid reset, connection ${n + 1}: ${written}/${pairs} HEADERS+RST pairs written; ${outcome(a, 0)}`)
    t.ok(a.closed || g !== undefined || written === pairs, `connection ${n + 1}: the flood was absorbed or ended with GOAWAY`)
    a.close()
  }
  flooding = false
  await honestLoop
  await sleep(300) // anything forwarded lands at the app by now

  const reached = app.filter(u => u.startsWith('/attack/'))
  const lines = mesh.decisions.filter(d => String(d.rawPath).startsWith('/attack/'))
  const byOutcome: Record<string, number> = {}
  for (const d of lines) byOutcome[`${d.status}${d.error === undefined ? '' : ` ${d.error}`}`] = (byOutcome[`${d.status}${d.error === undefined ? '' : ` ${d.error}`}`] ?? 0) + 1
  const afterGoaway = lines.filter(d => pastGoaway(d.rawPath, goaways)).length
  t.comment(`rapid reset: ${streams} streams opened and reset on 4 connections; ${lines.length} reached JavaScript (one decision line each: ${JSON.stringify(byOutcome)}), ${afterGoaway} of them numbered above the GOAWAY's last stream id; ${reached.length} reached the app (${reached.join(', ')})`)
  // Forwarding waits one turn of the event loop (setImmediate) so an RST read with the HEADERS
  // closes the stream first. An RST that lands in a later socket read (a TLS record boundary between
  // the two frames) is indistinguishable from a caller that cancels a forwarded request: at most a
  // handful of the thousands, and each is bounded by nghttp2's reset limit per connection.
  t.ok(reached.length <= 5, `at most a handful of cancelled streams reach the app (${reached.length} of ${streams})`)
  t.same(Object.keys(byOutcome).filter(k => !k.startsWith('499')), [], 'every decision line for a cancelled stream says 499 client-gone (none blames the app, none claims an answer)')
  t.equal(new Set(lines.map(d => d.rawPath)).size, lines.length, 'at most one decision line per stream')
  t.notOk(reached.some(u => pastGoaway(u, goaways)), 'no stream numbered above a GOAWAY\'s last stream id (which the caller may retry elsewhere) reaches the app')
  const ok = honestStatuses.filter(s => s === 200).length
  t.equal(ok, honestStatuses.length, `the honest caller's ${honestStatuses.length} requests during the flood all got 200 (${JSON.stringify([...new Set(honestStatuses)])})`)
  await stillServes(t, mesh, app)
})

t.test('CONTINUATION flood (CVE-2024-27983 class): a header block that never ends', async t => {
  const mesh = await startMesh(t)
  const app = watchApp(mesh)
  for (const [name, fragment] of [['1 KiB fragments', h.literal('x-flood', 'a'.repeat(1000))], ['empty fragments', Buffer.alloc(0)]] as const) {
    const a = await attacker(t, mesh)
    const rss = process.memoryUsage().rss
    a.write(h.headers(1, h.request('/attack/continuation'), { endHeaders: false }))
    const max = 100_000
    const written = await a.flood(max, () => h.continuation(1, fragment))
    const ended = await a.until(() => a.closed || a.goaway() !== undefined, 5000)
    const grew = process.memoryUsage().rss - rss
    t.comment(`CONTINUATION flood (${name}): ${written} frames written before the server stopped reading; ${outcome(a, 1)}; rss +${Math.round(grew / 1048576)} MiB`)
    t.ok(ended, `${name}: the connection is ended (GOAWAY or close)`)
    t.ok(written < max, `${name}: the server ended it before ${max} frames`)
    // The sidecar runs in this process; a block buffered without bound would show here (100 MB were offered).
    t.ok(grew < 64 * 1048576, `${name}: memory did not grow with the flood (+${Math.round(grew / 1048576)} MiB)`)
    a.close()
  }
  await sleep(100) // anything forwarded would have reached the app by now
  t.equal(app.filter(u => u.startsWith('/attack/')).length, 0, 'nothing reached the app')
  t.equal(mesh.decisions.filter(d => String(d.rawPath).startsWith('/attack/')).length, 0, 'no stream was ever made, so no decision line (refused inside nghttp2)')
  await stillServes(t, mesh, app)
})

t.test('HPACK bomb and oversized header lists (maxHeaderListSize = maxHeaderSize = 16384)', async t => {
  const mesh = await startMesh(t)
  const app = watchApp(mesh)

  // An entry must fit the default 4096-byte dynamic table (name + value + 32) to be stored at all.
  const big = 'b'.repeat(4000)
  const cases: Array<{ name: string, block: Buffer, decoded: number, prefix?: Buffer }> = [
    // 4 KB inserted once, then referenced 100 times by a one-byte index: ~400 KB decoded from ~4.2 KB on the wire.
    { name: 'HPACK bomb (one 4 KB entry, 100 one-byte references)', decoded: 101 * 4037, block: Buffer.concat([h.literalIndexed('x-big', big), ...Array.from({ length: 100 }, () => h.indexed(62))]) },
    // The same after shrinking the table to 0 and back (size updates may only open a block).
    { name: 'HPACK bomb after dynamic table size updates', decoded: 31 * 4037, prefix: Buffer.concat([h.tableSizeUpdate(0), h.tableSizeUpdate(4096)]), block: Buffer.concat([h.literalIndexed('x-big', big), ...Array.from({ length: 30 }, () => h.indexed(62))]) },
    // One plain 20 KB header value: more than one frame, so HEADERS + CONTINUATION.
    { name: 'one 20 KB literal header across HEADERS + CONTINUATION', decoded: 20_000, block: h.literal('x-long', 'l'.repeat(20_000)) },
    // Many small fields: 1000 references to a 4-byte entry (~37 KB decoded, 1000 header pairs).
    { name: '1000 references to a small entry', decoded: 1000 * 36, block: Buffer.concat([h.literalIndexed('x-p', '1'), ...Array.from({ length: 1000 }, () => h.indexed(62))]) }
  ]
  // Node enforces SETTINGS_MAX_HEADER_LIST_SIZE only once the caller has acknowledged the SETTINGS
  // that announce it (node_http2.cc takes each stream's limit from nghttp2_session_get_local_settings,
  // the acknowledged values; before the ack that is "unlimited"). Every caller's first requests
  // travel before its ack, and an attacker need never ack: only maxHeaderListPairs and
  // maxSessionMemory bound the block then. So both are tried: after the ack, and first flight.
  for (const ack of [true, false]) {
    for (const [i, c] of cases.entries()) {
      const requestId = `h2-bomb-${ack ? 'acked' : 'first-flight'}-${i}`
      const a = await attacker(t, mesh, { ackSettings: ack })
      if (ack) {
        await a.until(() => a.frames.some(f => f.type === h.T.SETTINGS && (f.flags & h.F.ACK) === 0))
        await sleep(50) // our ack has been read
      }
      // The attack header(s) come first: a bomb's entry must be inserted before it is referenced.
      // Pseudo-headers cannot follow them, so the fields after the bomb are regular ones.
      const block = Buffer.concat([c.prefix ?? Buffer.alloc(0), h.request(`/attack/bomb/${i}`), c.block, h.literal('x-request-id', requestId)])
      a.write(...(block.length <= 16_000 ? [h.headers(1, block)] : [h.headers(1, block.subarray(0, 16_000), { endHeaders: false }), h.continuation(1, block.subarray(16_000), true)]))
      await a.until(() => a.answered(1), 3000)
      await sleep(50) // a decision line, if any, is written by now (refusals inside nghttp2 get none)
      const line = mesh.decisions.find(d => d.requestId === requestId)
      const label = `${c.name}, ${ack ? 'after the SETTINGS ack' : 'first flight (SETTINGS not acked)'}`
      t.comment(`${label} (~${Math.round(c.decoded / 1024)} KiB decoded from ${block.length} B): ${outcome(a, 1)}${line === undefined ? '; no decision line' : `; decision line ${line.decision} ${line.status} "${line.reason}"${line.decision === 'allow' ? ' (forwarded: the status is the app\'s own answer)' : ''}`}`)
      t.ok(refused(a, 1), `${label}: refused`)
      t.not(line?.decision, 'allow', `${label}: not forwarded to the app (a decision line that says allow means it was)`)
      if (line !== undefined) t.match(line, { decision: 'deny', status: 431 }, `${label}: the decision line says deny 431`)
      a.close()
    }
  }
  // Control: a header list under the limit (10 fields of 1 KB, ~10.6 KB decoded) goes through.
  const a = await attacker(t, mesh)
  a.write(h.headers(1, Buffer.concat([h.request('/within-limit'), ...Array.from({ length: 10 }, (_, i) => h.literal(`x-fill-${i}`, 'f'.repeat(1000)))])))
  await a.until(() => a.answered(1), 3000)
  t.equal(a.status(1), 200, `a ~10.6 KB header list under the limit is served (${outcome(a, 1)})`)
  await sleep(100) // anything forwarded would have reached the app by now
  t.same(app.filter(u => u.startsWith('/attack/')), [], 'no oversized header list reached the app\'s request handler')
  await stillServes(t, mesh, app)
})

t.test('more streams than maxConcurrentStreams', async t => {
  for (const [limit, ackSettings] of [[100, false], [100, true], [10, false]] as const) {
    await t.test(`limit ${limit}, client ${ackSettings ? 'has acknowledged' : 'has not yet acknowledged'} the server's SETTINGS`, async t => {
      const mesh = await startMesh(t, limit === 100 ? {} : { sidecar: { maxConcurrentStreams: limit } })
      const app = watchApp(mesh)
      const a = await attacker(t, mesh, { ackSettings })
      await a.until(() => a.frames.some(f => f.type === h.T.SETTINGS && (f.flags & h.F.ACK) === 0))
      const s = a.frames.find(f => f.type === h.T.SETTINGS && (f.flags & h.F.ACK) === 0)!.payload
      const advertised = new Map<number, number>()
      for (let i = 0; i + 6 <= s.length; i += 6) advertised.set(s.readUInt16BE(i), s.readUInt32BE(i + 2))
      t.equal(advertised.get(h.S.MAX_CONCURRENT_STREAMS), limit, `SETTINGS_MAX_CONCURRENT_STREAMS is ${limit}`)
      if (ackSettings) await sleep(100) // the ack is processed before the streams arrive

      // `limit` POSTs whose bodies have not ended keep their streams open; then 5 more.
      const id = (i: number): number => 1 + 2 * i
      for (let i = 0; i < limit; i++) a.write(h.headers(id(i), h.request(`/ok/${i}`, [], 'POST'), { endStream: false }))
      const excess = [0, 1, 2, 3, 4].map(j => id(limit + j))
      excess.forEach((sid, j) => a.write(h.headers(sid, h.request(`/attack/excess/${j}`, [], 'POST'), { endStream: false })))
      await a.until(() => excess.every(sid => a.answered(sid)), 3000)
      t.comment(`limit ${limit}, settings ${ackSettings ? 'acked' : 'not acked'}: excess streams: ${excess.map(sid => `${sid}: ${outcome(a, sid)}`).join('; ')}`)
      t.ok(excess.every(sid => refused(a, sid)), 'every stream past the limit is refused')
      if (!ackSettings) {
        t.same(excess.map(sid => a.rst(sid)), excess.map(() => h.E.REFUSED_STREAM), 'with REFUSED_STREAM (safe to retry), the connection kept')
        for (let i = 0; i < limit; i++) a.write(h.data(id(i), `body ${i}`))
        await a.until(() => Array.from({ length: limit }, (_, i) => a.status(id(i))).every(x => x !== undefined), 5000)
        const ok = Array.from({ length: limit }, (_, i) => a.status(id(i))).filter(x => x === 200).length
        t.equal(ok, limit, `the first ${limit} streams are all served (${ok} got 200)`)
      } else {
        // nghttp2 treats a stream over an acknowledged limit as a connection error: GOAWAY
        // PROTOCOL_ERROR naming the last stream it accepted; the open ones are not finished.
        const g = a.goaway()
        t.comment(`acked: GOAWAY ${g === undefined ? 'none' : `${h.ERR[g.code]} last stream ${g.lastStreamId}`}; streams within the limit answered: ${Array.from({ length: limit }, (_, i) => a.answered(id(i))).filter(Boolean).length}`)
        if (g !== undefined) t.ok(g.lastStreamId < excess[0]!, 'GOAWAY\'s last stream id excludes every excess stream')
      }
      await sleep(100) // anything forwarded would have reached the app by now
      t.equal(app.filter(u => u.startsWith('/attack/')).length, 0, 'no excess stream reached the app')
      t.equal(mesh.decisions.filter(d => String(d.rawPath).startsWith('/attack/')).length, 0, 'no excess stream got a decision line (refused inside nghttp2)')
      // An honest node:http2 client sending more than the limit at once queues past it and is fully served.
      const good = honest(t, mesh)
      const statuses = await Promise.all(Array.from({ length: limit + 20 }, async (_, i) => await good.get(`/burst/${i}`)))
      t.equal(statuses.filter(x => x === 200).length, limit + 20, `an honest client's ${limit + 20} concurrent requests are all served`)
      await stillServes(t, mesh, app)
    })
  }
})
