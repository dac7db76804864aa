import t, { type Test } from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { errorBody, readErrorBody, refusal } from '../src/error-body.ts'
import { grpcText } from '../src/proxy/refusal.ts'
import { ForbiddenError, NotFoundError, PeerIdentityError, SvidInvalidError, TokenReplayedError } from '../src/errors.ts'
import { startAdmin } from '../src/proxy/admin.ts'
import { startMetricsServer } from '../src/metrics-server.ts'
import { silentLogger } from '../src/log.ts'
import { repoRoot } from './helpers/markdown-run.ts'

// One JSON body for every error and refusal (issue 16): {"error": GH_CODE, "message", "reason"?,
// "requestId"?}, written by src/error-body.ts alone. The sidecar's data path, the CA and the injector
// are checked by their own tests; here the body itself, the admin and metrics listeners, and that no
// other code writes an error body of its own.

const KEYS = new Set(['error', 'message', 'reason', 'requestId'])

function isErrorBody (t: Test, text: string, code: string, what: string): Record<string, unknown> {
  const body = JSON.parse(text) as Record<string, unknown>
  t.equal(body.error, code, `${what}: error ${code}`)
  t.type(body.message, 'string', `${what}: a message`)
  t.same(Object.keys(body).filter(k => !KEYS.has(k)), [], `${what}: no field outside the one shape`)
  return body
}

t.test('a GatehouseError, a refusal and anything unexpected, as the one body', async t => {
  t.same(errorBody(new TokenReplayedError()), { error: 'GH_TOKEN_REPLAYED', message: 'join token has already been used' }, 'the CA\'s shape, unchanged')
  t.same(errorBody(new SvidInvalidError('expired', 'the certificate has expired')), { error: 'GH_SVID_INVALID', message: 'the certificate has expired', reason: 'expired' }, 'an error\'s category is the reason')
  t.same(errorBody(new PeerIdentityError('unexpected-id', 'b:1 is x, expected y')), { error: 'GH_PEER_IDENTITY', message: 'b:1 is x, expected y', reason: 'unexpected-id' })
  const secret = new Error('ENOENT /etc/secret/key.pem')
  t.same(errorBody(secret), { error: 'GH_INTERNAL', message: 'internal error' }, 'an unexpected error: GH_INTERNAL, its cause never shown')
  t.same(errorBody('a string thrown'), { error: 'GH_INTERNAL', message: 'internal error' })

  const denied = new ForbiddenError()
  const r = refusal(denied, { requestId: 'req-1' })
  t.same(r, { status: 403, code: 'GH_FORBIDDEN', message: 'denied by policy', requestId: 'req-1' }, 'a refusal: the instance\'s code, status and message, and the request id')
  t.same(errorBody(r), { error: 'GH_FORBIDDEN', message: 'denied by policy', requestId: 'req-1' })
  t.same(errorBody(refusal(denied, { message: 'the caller is quarantined', reason: 'quarantined', requestId: undefined })), { error: 'GH_FORBIDDEN', message: 'the caller is quarantined', reason: 'quarantined' }, 'no undefined fields')
  t.equal(JSON.stringify(errorBody(r)), '{"error":"GH_FORBIDDEN","message":"denied by policy","requestId":"req-1"}', 'field order: error, message, reason, requestId')
  t.equal(grpcText(r), 'GH_FORBIDDEN: denied by policy (request id req-1)', 'gRPC: the same fields in grpc-message')
  t.equal(grpcText(refusal(denied, { reason: 'quarantined', requestId: 'q' })), 'GH_FORBIDDEN: denied by policy (reason quarantined, request id q)')
})

t.test('readErrorBody: what the CA client reads back, and what it is not', async t => {
  const body = errorBody(new TokenReplayedError())
  t.same(readErrorBody(JSON.stringify(body)), body, 'round trip')
  t.same(readErrorBody('{"error":"GH_X","message":"m","reason":"r","requestId":"i","extra":1}'), { error: 'GH_X', message: 'm', reason: 'r', requestId: 'i' })
  t.same(readErrorBody('{"error":"GH_X"}'), { error: 'GH_X', message: '' }, 'no message: empty, the caller says what it got')
  for (const text of ['<html>502 Bad Gateway</html>', '', 'null', '[]', '{"error":"forbidden"}', '{"error":{"code":"GH_X"}}', '{"message":"no code"}']) {
    t.equal(readErrorBody(text), undefined, `not an error body: ${JSON.stringify(text)}`)
  }
})

t.test('the admin listener answers its refusals with the one body', async t => {
  const registry = new Registry()
  const admin = await startAdmin({ listen: { host: '127.0.0.1', port: 0 }, registry, notReady: () => [] })
  t.teardown(admin.close)
  const base = `http://127.0.0.1:${admin.port}`
  const nope = await request(`${base}/nope`)
  t.equal(nope.statusCode, 404)
  t.match(nope.headers['content-type'], /^application\/json/)
  isErrorBody(t, await nope.body.text(), 'GH_NOT_FOUND', 'GET /nope')
  const post = await request(`${base}/healthz`, { method: 'POST', body: 'x' })
  t.equal(post.statusCode, 405)
  isErrorBody(t, await post.body.text(), 'GH_METHOD_NOT_ALLOWED', 'POST /healthz')

  const broken = { metrics: async () => { throw new Error('collector failed') }, contentType: 'text/plain' } as unknown as Registry
  const failing = await startAdmin({ listen: { host: '127.0.0.1', port: 0 }, registry: broken, notReady: () => [] })
  t.teardown(failing.close)
  const metrics = await request(`http://127.0.0.1:${failing.port}/metrics`)
  t.equal(metrics.statusCode, 500)
  const body = isErrorBody(t, await metrics.body.text(), 'GH_METRICS_UNAVAILABLE', 'GET /metrics, the registry failing')
  t.notMatch(String(body.message), /collector failed/, 'the cause is not in the answer')
  // GH_LOOPBACK_ONLY needs a connection off loopback: test/admin-probe-relay.test.ts checks its status and body.
})

t.test('the metrics listener (ca serve / inject serve --metrics-listen) answers its refusals with the one body', async t => {
  const registry = new Registry()
  const server = await startMetricsServer(registry, { host: '127.0.0.1', port: 0 }, silentLogger, 'test.metrics_listening')
  t.teardown(server.close)
  const base = `http://127.0.0.1:${server.port}`
  const nope = await request(`${base}/nope`)
  t.equal(nope.statusCode, 404)
  isErrorBody(t, await nope.body.text(), 'GH_NOT_FOUND', 'GET /nope')
  const del = await request(`${base}/metrics`, { method: 'DELETE' })
  t.equal(del.statusCode, 405)
  isErrorBody(t, await del.body.text(), 'GH_METHOD_NOT_ALLOWED', 'DELETE /metrics')
  t.equal((await request(`${base}/metrics`)).statusCode, 200, 'and /metrics itself still answers')

  const broken = { metrics: async () => { throw new Error('collector failed') }, contentType: 'text/plain' } as unknown as Registry
  const failing = await startMetricsServer(broken, { host: '127.0.0.1', port: 0 }, silentLogger, 'test.metrics_listening')
  t.teardown(failing.close)
  const metrics = await request(`http://127.0.0.1:${failing.port}/metrics`)
  t.equal(metrics.statusCode, 500)
  isErrorBody(t, await metrics.body.text(), 'GH_METRICS_UNAVAILABLE', 'GET /metrics, the registry failing')
})

t.test('no code but src/error-body.ts writes an error body', async t => {
  // The shapes of before: {error: 'snake_case'} bodies, a toJSON on the error class, hand-built JSON.
  const WRITES_BODY = /JSON\.stringify\(\s*\{\s*error\b|\{\s*error:\s*'[a-z_]+'|toJSON \(\): \{ error/
  // The demo's toy app is an application behind the sidecar, not a Gatehouse server.
  const ALLOWED = new Set(['src/error-body.ts', 'src/demo/apps.ts'])
  const files = (dir: string): string[] => readdirSync(join(repoRoot, dir), { withFileTypes: true }).flatMap(e => e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [])
  const offenders = files('src').filter(f => !ALLOWED.has(f)).flatMap(f => readFileSync(join(repoRoot, f), 'utf8').split('\n').map((line, i) => ({ f, line, i })).filter(x => WRITES_BODY.test(x.line)).map(x => `${x.f}:${x.i + 1}: ${x.line.trim()}`))
  t.same(offenders, [], 'every error body goes through src/error-body.ts')
})
