import t from 'tap'
import * as grpc from '@grpc/grpc-js'
import { Pki, startWorkload } from './helpers/mesh.ts'
import { CALLER_ID, CALLEE_ID, TD, routesYaml } from './helpers/outbound-mesh.ts'
import { echoClient, startGrpcApp } from './helpers/grpc-app.ts'
import { waitFor } from './helpers/wait.ts'
import { replaceFile, tempDir } from './helpers/files.ts'

// A gRPC client configured the usual way (grpc-js with grpc_proxy pointing at its sidecar's outbound
// port, an insecure channel to `b.internal:80`) reaches a grpc-js app through two sidecars: grpc-js
// opens a CONNECT tunnel, speaks HTTP/2 inside it, and sidecar A carries each call as a stream on its
// one mTLS HTTP/2 link to sidecar B, which authorizes it per call and passes it to the app over h2c.

t.test('grpc-js through two sidecars: all four call kinds, per-call authorization at the callee, one link', async t => {
  const dir = tempDir(t, 'gh-outbound-grpc-')
  const pki = new Pki(dir, TD)
  const app = await startGrpcApp(t)
  const b = await startWorkload(t, { pki, name: 'b', id: CALLEE_ID, upstreamPort: app.port, allow: [CALLER_ID] })
  let links = 0
  b.sidecar.inbound.server.on('secureConnection', () => { links++ })
  const a = await startWorkload(t, { pki, name: 'a', id: CALLER_ID, routes: routesYaml([{ host: 'b.internal', address: b.inboundAddress, id: CALLEE_ID }]) })

  // grpc-js reads grpc_proxy when a channel is made.
  const saved = process.env.grpc_proxy
  process.env.grpc_proxy = `http://127.0.0.1:${a.outboundPort}`
  t.teardown(() => { if (saved === undefined) delete process.env.grpc_proxy; else process.env.grpc_proxy = saved })
  const client = echoClient(t, 'b.internal:80', grpc.credentials.createInsecure())

  const unary = await client.unary({ text: 'hi', n: 1 }, { metadata: { 'x-echo-trace': 't1' } })
  t.equal(unary.reply.text, 'hi', 'unary')
  t.equal(unary.status.metadata.get('x-echo-trace')[0], 't1', 'request metadata reached the app and its trailers came back')
  t.equal((await client.serverStream({ text: 's', n: 5 })).reply.length, 5, 'server streaming')
  t.match((await client.clientStream([{ text: 'a', n: 1 }, { text: 'b', n: 2 }, { text: 'c', n: 3 }])).reply, { n: 6 }, 'client streaming')
  t.same((await client.bidi([{ text: 'x', n: 1 }, { text: 'y', n: 2 }])).reply.map(m => m.text), ['x', 'y'], 'bidirectional streaming')

  const lines = b.decisions
  t.same(lines.map(l => [l.method, l.path, l.caller, l.decision, l.status]), ['Unary', 'ServerStream', 'ClientStream', 'Bidi'].map(m => ['POST', `/gatehouse.test.Echo/${m}`, CALLER_ID, 'allow', 200]), 'B wrote one decision line per call, naming the method, for caller A')
  t.ok(app.calls.every(c => String(c.metadata.get('x-forwarded-client-cert')[0]).endsWith(`;URI=${CALLER_ID}`)), 'the app saw XFCC naming A')
  t.equal(links, 1, 'every call travelled on one mTLS connection from A to B')

  // B's owner denies Bidi: the refusal reaches the client as a gRPC status, through both sidecars.
  const revision = lines.at(-1)!.policyRevision as string
  replaceFile(b.policyFile, `version: 1\nrules:\n  - name: allowed-callers\n    from: ["${CALLER_ID}"]\ndeny:\n  - name: no-bidi\n    from: ["${CALLER_ID}"]\n    paths: ["/gatehouse.test.Echo/Bidi"]\n`)
  await waitFor(() => b.sidecar.policy.current?.revision !== revision, 5000, 'B to load its new policy')
  const denied = await client.bidi([{ text: 'z', n: 1 }]).then(() => undefined, (e: grpc.ServiceError) => e)
  t.equal(denied?.code, grpc.status.PERMISSION_DENIED, 'a denied call is PERMISSION_DENIED at the client')
  const line = b.decisions.at(-1)!
  t.match(line, { decision: 'deny', rule: 'no-bidi', path: '/gatehouse.test.Echo/Bidi' })
  t.match(denied?.details, line.requestId as string, 'with the decision line\'s request id')
  t.equal(app.calls.filter(c => c.path.endsWith('/Bidi')).length, 1, 'the denied call never reached the app')
})
