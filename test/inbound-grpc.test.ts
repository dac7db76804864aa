import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import * as grpc from '@grpc/grpc-js'
import { h2Request, startMesh, type Mesh } from './helpers/mesh.ts'
import { grpcClient, startGrpcApp, type EchoClient, type GrpcApp, type GrpcAppOptions } from './helpers/grpc-app.ts'
import { waitFor } from './helpers/wait.ts'

// gRPC through the inbound listener: a grpc-js client (ALPN h2, the caller's SVID) calls a real
// grpc-js app behind the sidecar (h2c, upstreamProtocol auto). Every call is one stream, judged on
// its own path, with one decision line; refusals and upstream failures are gRPC statuses the client
// can read (trailers-only, request id in grpc-message), never a dropped connection.

const CALLER = 'spiffe://example.org/ns/client/sa/caller'
const SVC = '/gatehouse.test.Echo'
const ALL_METHODS = ['Unary', 'ServerStream', 'ClientStream', 'Bidi'] as const

const policy = (allow: readonly string[], deny: readonly string[] = []): string => `version: 1
rules:
  - name: caller-echo
    from: ["${CALLER}"]
    methods: [POST]
    paths: ${JSON.stringify(allow.map(m => `${SVC}/${m}`))}
${deny.length === 0 ? '' : `deny:
  - name: no-${deny[0]!.toLowerCase()}
    from: ["${CALLER}"]
    paths: ${JSON.stringify(deny.map(m => `${SVC}/${m}`))}
`}`

interface Setup { mesh: Mesh, app: GrpcApp, client: EchoClient }

async function setup (t: Test, o: { allow?: readonly string[], deny?: readonly string[], app?: GrpcAppOptions, upstreamTimeoutMs?: number } = {}): Promise<Setup> {
  const app = await startGrpcApp(t, o.app)
  // startMesh starts its own HTTP app too; opts.sidecar.upstream points the sidecar at the gRPC app instead.
  const mesh = await startMesh(t, {
    policy: policy(o.allow ?? ALL_METHODS, o.deny),
    sidecar: { upstream: { host: '127.0.0.1', port: app.port }, ...(o.upstreamTimeoutMs === undefined ? {} : { upstreamTimeoutMs: o.upstreamTimeoutMs }) }
  })
  return { mesh, app, client: grpcClient(t, mesh.sidecar.inbound.port, mesh.client, mesh.pki) }
}

/** The n-th decision line (1-based), once written: calls are made one at a time, so it is that call's. */
async function line (mesh: Mesh, n: number): Promise<Record<string, any>> {
  await waitFor(() => mesh.decisions.length >= n, 5000, `decision line ${n}`)
  return mesh.decisions[n - 1]!
}

/** No further line turns up: exactly `n` in all. */
async function exactlyLines (t: Test, mesh: Mesh, n: number): Promise<void> {
  await sleep(200)
  t.equal(mesh.decisions.length, n, `exactly ${n} decision line(s), one per call`)
}

const rejection = async (p: Promise<unknown>): Promise<grpc.ServiceError> => {
  try { await p } catch (err) { return err as grpc.ServiceError }
  throw new Error('the call succeeded; it was expected to fail')
}

const first = (md: grpc.Metadata, key: string): string | undefined => md.get(key)[0]?.toString()

t.test('allowed calls of all four kinds pass through with payloads, metadata, status and trailers intact', async t => {
  const { mesh, app, client } = await setup(t)

  const u = await client.unary({ text: 'hello', n: 7 }, { metadata: { 'x-custom': 'req-1', 'x-echo-token': 'abc', 'x-forwarded-client-cert': 'URI=spiffe://example.org/ns/admin/sa/root' } })
  t.same(u.reply, { text: 'hello', n: 7 })
  t.equal(u.status.code, grpc.status.OK)
  t.equal(first(u.headers, 'x-app-initial'), 'Unary', 'response metadata (headers) reaches the caller')
  t.equal(first(u.status.metadata, 'x-app-trailer'), 'Unary', 'trailing metadata reaches the caller')
  t.equal(first(u.status.metadata, 'x-echo-token'), 'abc', 'request metadata reached the app and came back as a trailer')

  const ss = await client.serverStream({ text: 's', n: 5 }, { metadata: { 'x-echo-kind': 'server-stream' } })
  t.same(ss.reply, [0, 1, 2, 3, 4].map(i => ({ text: `s-${i}`, n: i })), 'all streamed messages, in order')
  t.equal(ss.status.code, grpc.status.OK)
  t.equal(first(ss.status.metadata, 'x-app-trailer'), 'ServerStream')
  t.equal(first(ss.status.metadata, 'x-echo-kind'), 'server-stream')

  const cs = await client.clientStream([{ text: 'a', n: 1 }, { text: 'b', n: 2 }, { text: 'c', n: 39 }])
  t.same(cs.reply, { text: 'a,b,c', n: 42 })
  t.equal(first(cs.status.metadata, 'x-app-trailer'), 'ClientStream')

  // bidi sends each message only once the previous echo came back: it needs frames relayed as they come.
  const msgs = [1, 2, 3, 4].map(n => ({ text: `m${n}`, n }))
  const bd = await client.bidi(msgs)
  t.same(bd.reply, msgs)
  t.equal(first(bd.status.metadata, 'x-app-trailer'), 'Bidi')

  t.same(app.calls.map(c => c.path), ALL_METHODS.map(m => `${SVC}/${m}`), 'the app saw each call once, on its path')
  const xfcc = app.calls[0]!.metadata.get('x-forwarded-client-cert')
  t.equal(xfcc.length, 1, 'one XFCC value: the caller\'s own was dropped')
  t.match(String(xfcc[0]), new RegExp(`^By=spiffe://example\\.org/ns/server/sa/payments;Hash=[0-9a-f]{64};URI=${CALLER.replace(/\./g, '\\.')}$`))
  for (const c of app.calls) t.match(first(c.metadata, 'x-forwarded-client-cert'), `URI=${CALLER}`, `${c.path}: XFCC names the caller`)
  t.equal(first(app.calls[0]!.metadata, 'x-custom'), 'req-1', 'custom request metadata reached the app')

  for (const [i, m] of ALL_METHODS.entries()) {
    const d = await line(mesh, i + 1)
    t.match(d, { decision: 'allow', rule: 'caller-echo', caller: CALLER, method: 'POST', path: `${SVC}/${m}` }, `${m}: its decision line`)
    t.equal(first(app.calls[i]!.metadata, 'x-request-id'), d.requestId, `${m}: the app got the decision line's request id`)
  }
  await exactlyLines(t, mesh, 4)
})

t.test('a denied method gets PERMISSION_DENIED (trailers-only, request id in grpc-message) and never reaches the app', async t => {
  const { mesh, app, client } = await setup(t, { allow: ['Unary', 'ServerStream'], deny: ['Bidi'] })

  const bidi = await rejection(client.bidi([{ text: 'x', n: 1 }]))
  t.equal(bidi.code, grpc.status.PERMISSION_DENIED, `deny rule: ${bidi.code} ${bidi.details}`)
  const d1 = await line(mesh, 1)
  t.match(d1, { decision: 'deny', reason: 'deny-rule', rule: 'no-bidi', caller: CALLER, method: 'POST', path: `${SVC}/Bidi` })
  t.ok(bidi.details.includes(d1.requestId), `grpc-message "${bidi.details}" names request id ${d1.requestId}`)

  const cs = await rejection(client.clientStream([{ text: 'x', n: 1 }, { text: 'y', n: 2 }]))
  t.equal(cs.code, grpc.status.PERMISSION_DENIED, `no matching rule: ${cs.code} ${cs.details}`)
  const d2 = await line(mesh, 2)
  t.match(d2, { decision: 'deny', reason: 'no-matching-rule', rule: null, method: 'POST', path: `${SVC}/ClientStream` })
  t.ok(cs.details.includes(d2.requestId), `grpc-message "${cs.details}" names request id ${d2.requestId}`)

  // Per-stream authorization: the same connection still serves an allowed method.
  const u = await client.unary({ text: 'still here', n: 1 })
  t.same(u.reply, { text: 'still here', n: 1 })
  t.match(await line(mesh, 3), { decision: 'allow', path: `${SVC}/Unary` })

  // The refusal on the wire: grpc-status 7 in the response HEADERS, no body, no trailers, a clean end.
  const raw = await h2Request(await mesh.h2(), { ':method': 'POST', ':path': `${SVC}/Bidi`, 'content-type': 'application/grpc', te: 'trailers' }, Buffer.from([0, 0, 0, 0, 0]))
  const d4 = await line(mesh, 4)
  t.match(raw, { status: 200, headers: { 'content-type': 'application/grpc', 'grpc-status': '7' }, rstCode: 0 })
  t.equal(raw.body, '', 'no body')
  t.same(Object.keys(raw.trailers), [], 'trailers-only: no second HEADERS')
  t.ok(decodeURIComponent(String(raw.headers['grpc-message'])).includes(d4.requestId), 'grpc-message names the request id')

  t.same(app.calls.map(c => c.path), [`${SVC}/Unary`], 'denied calls never reached the app')
  await exactlyLines(t, mesh, 4)
})

t.test('an app\'s own error status, message and trailers reach the caller unchanged', async t => {
  const { mesh, client } = await setup(t, { app: { fail: { Unary: { code: grpc.status.NOT_FOUND, details: 'no such echo: 100%' } } } })
  const err = await rejection(client.unary({ text: 'x', n: 1 }, { metadata: { 'x-echo-why': 'because' } }))
  t.equal(err.code, grpc.status.NOT_FOUND)
  t.equal(err.details, 'no such echo: 100%')
  t.equal(first(err.metadata, 'x-app-trailer'), 'Unary')
  t.equal(first(err.metadata, 'x-echo-why'), 'because')
  t.match(await line(mesh, 1), { decision: 'allow', method: 'POST', path: `${SVC}/Unary` })
  await exactlyLines(t, mesh, 1)
})

t.test('deadlines: the caller\'s own, and the sidecar\'s upstream timeout, give DEADLINE_EXCEEDED', async t => {
  const { mesh, app, client } = await setup(t, { app: { delayMs: { Unary: 3000, ServerStream: 3000 } }, upstreamTimeoutMs: 1000 })

  // The client's deadline (300 ms) expires while the app sleeps: the client ends the stream.
  const own = await rejection(client.unary({ text: 'slow', n: 1 }, { deadlineMs: 300 }))
  t.equal(own.code, grpc.status.DEADLINE_EXCEEDED, `${own.code} ${own.details}`)
  t.match(await line(mesh, 1), { path: `${SVC}/Unary`, method: 'POST' }, 'the abandoned call still has its line')

  // The client would wait 10 s; the sidecar gives up on the app after upstreamTimeoutMs (1 s).
  const started = Date.now()
  const up = await rejection(client.serverStream({ text: 'slow', n: 2 }))
  t.equal(up.code, grpc.status.DEADLINE_EXCEEDED, `the sidecar's timeout: ${up.code} ${up.details}`)
  t.ok(Date.now() - started < 2900, 'answered by the sidecar, before the app woke up')
  const d = await line(mesh, 2)
  t.match(d, { path: `${SVC}/ServerStream`, method: 'POST' })
  t.ok(up.details.includes(d.requestId), `grpc-message "${up.details}" names request id ${d.requestId}`)
  t.equal(app.calls.length, 2, 'both calls reached the app')
  await exactlyLines(t, mesh, 2)
})

t.test('the app down gives UNAVAILABLE with the request id, not a dropped connection', async t => {
  const { mesh, app, client } = await setup(t, { app: { delayMs: { Bidi: 5000 } } })
  t.same((await client.unary({ text: 'up', n: 1 })).reply, { text: 'up', n: 1 }, 'served while the app is up')

  // A call in flight when the app goes away.
  const inFlight = rejection(client.bidi([{ text: 'x', n: 1 }]))
  await waitFor(() => app.calls.length === 2, 5000, 'the bidi call to reach the app')
  app.stop()
  const mid = await inFlight
  t.equal(mid.code, grpc.status.UNAVAILABLE, `in flight: ${mid.code} ${mid.details}`)
  const d2 = await line(mesh, 2)
  t.match(d2, { path: `${SVC}/Bidi`, method: 'POST' })
  t.ok(mid.details.includes(d2.requestId), `grpc-message "${mid.details}" names request id ${d2.requestId}`)

  // A new call: nothing listens on the app's port any more.
  const next = await rejection(client.unary({ text: 'down', n: 1 }))
  t.equal(next.code, grpc.status.UNAVAILABLE, `after: ${next.code} ${next.details}`)
  const d3 = await line(mesh, 3)
  t.match(d3, { decision: 'allow', path: `${SVC}/Unary`, method: 'POST' })
  t.ok(next.details.includes(d3.requestId), `grpc-message "${next.details}" names request id ${d3.requestId}`)
  await exactlyLines(t, mesh, 3)
})
