import t from 'tap'
import { unlinkSync, writeFileSync } from 'node:fs'
import { Pki, startApp, startWorkload } from './helpers/mesh.ts'
import { parseRoutes, DEFAULT_INBOUND_PORT } from '../src/proxy/routes.ts'
import { RoutesInvalidError } from '../src/errors.ts'
import { CALLER_ID, CALLEE_ID, TD, routesYaml, viaProxy, json } from './helpers/outbound-mesh.ts'
import { waitFor } from './helpers/wait.ts'
import { replaceFile, tempDir } from './helpers/files.ts'

// The routes file (docs/architecture.md, "Outbound routes"): validated with a file:line:col for every problem, Kubernetes service
// hosts may name a service account instead of an ID, and a running sidecar picks up a new file
// without a restart while a bad one never replaces the last good table.

const ID = `spiffe://${TD}/ns/a/sa/a`
const problemsOf = (text: string): string[] => {
  try {
    parseRoutes(text, 'routes.yaml', TD)
  } catch (err) {
    if (err instanceof RoutesInvalidError) return err.problems
    throw err
  }
  return []
}
const route = (lines: string[]): string => `version: 1\nroutes:\n${lines.join('\n')}\n`

t.test('parseRoutes: valid routes, host:port and Kubernetes service accounts', async t => {
  const routes = parseRoutes(route([
    '  - host: Payments.Internal',
    '    address: 10.0.0.7:15006',
    `    id: ${ID}`,
    '  - host: payments.internal:8080',
    '    address: "[fd00::7]:15006"',
    `    id: ${ID}`,
    '  - host: payments.billing.svc',
    '    serviceAccount: payments',
    '  - host: api.orders.svc.cluster.local:8080',
    '    serviceAccount: api',
    '  - host: ledger.billing.svc',
    '    address: 10.0.0.9:9443',
    '    serviceAccount: ledger'
  ]), 'routes.yaml', TD)
  t.same(routes, [
    { host: 'payments.internal', port: undefined, address: { host: '10.0.0.7', port: 15006 }, id: ID, protocol: 'http' },
    { host: 'payments.internal', port: 8080, address: { host: 'fd00::7', port: 15006 }, id: ID, protocol: 'http' },
    { host: 'payments.billing.svc', port: undefined, address: { host: 'payments.billing.svc', port: DEFAULT_INBOUND_PORT }, id: `spiffe://${TD}/ns/billing/sa/payments`, protocol: 'http' },
    { host: 'api.orders.svc.cluster.local', port: 8080, address: { host: 'api.orders.svc.cluster.local', port: DEFAULT_INBOUND_PORT }, id: `spiffe://${TD}/ns/orders/sa/api`, protocol: 'http' },
    { host: 'ledger.billing.svc', port: undefined, address: { host: '10.0.0.9', port: 9443 }, id: `spiffe://${TD}/ns/billing/sa/ledger`, protocol: 'http' }
  ], 'hosts lowercased, port-specific route kept apart, serviceAccount -> spiffe://TD/ns/<namespace>/sa/<sa> at host:15006')
  t.equal(DEFAULT_INBOUND_PORT, 15006)
  t.same(parseRoutes('version: 1\nroutes: []\n', 'r', TD), [], 'an empty list is valid (everything refused)')
  t.same(parseRoutes('version: 1\n', 'r', TD), [], 'so is no list')
})

t.test('parseRoutes: every problem with file:line:col', async t => {
  const cases: Array<[string, string, RegExp[]]> = [
    ['unknown key', route(['  - host: a.internal', '    address: 127.0.0.1:1', `    id: ${ID}`, '    idd: x']),
      [/^routes\.yaml:6:5: routes\[0\]: unknown key "idd" \(expected one of host, address, id, serviceAccount, protocol, listen, port\)$/]],
    ['unknown top-level key', `version: 1\nrouts: []\n`, [/^routes\.yaml:2:1: unknown key "routs"/]],
    ['missing id', route(['  - host: a.internal', '    address: 127.0.0.1:1']),
      [/^routes\.yaml:3:5: routes\[0\]: expected id \(or serviceAccount, for a name\.namespace\.svc host\)$/]],
    ['bad id (not spiffe)', route(['  - host: a.internal', '    address: 127.0.0.1:1', '    id: https://example.org/ns/a/sa/a']),
      [/^routes\.yaml:5:9: routes\[0\]\.id: expected the SPIFFE ID the destination must present, got "https:\/\/example\.org\/ns\/a\/sa\/a"$/]],
    ['bad id (trust domain only)', route(['  - host: a.internal', '    address: 127.0.0.1:1', `    id: spiffe://${TD}`]),
      [/^routes\.yaml:5:9: routes\[0\]\.id: /]],
    ['bad id (not a string)', route(['  - host: a.internal', '    address: 127.0.0.1:1', '    id: 5']),
      [/^routes\.yaml:3:5: routes\[0\]: expected id/]],
    ['address without port', route(['  - host: a.internal', '    address: 127.0.0.1', `    id: ${ID}`]),
      [/^routes\.yaml:4:14: routes\[0\]\.address: expected HOST:PORT of the destination's sidecar$/]],
    ['address port out of range', route(['  - host: a.internal', '    address: 127.0.0.1:70000', `    id: ${ID}`]),
      [/^routes\.yaml:4:14: routes\[0\]\.address: expected HOST:PORT/]],
    ['missing address (not a Kubernetes service host)', route(['  - host: a.internal', `    id: ${ID}`]),
      [/^routes\.yaml:3:5: routes\[0\]\.address: expected HOST:PORT/]],
    ['host with a scheme', route(['  - host: "http://a.internal"', '    address: 127.0.0.1:1', `    id: ${ID}`]),
      [/^routes\.yaml:3:11: routes\[0\]\.host: expected a host name, optionally with :port$/]],
    ['duplicate host (case-insensitive)', route(['  - host: a.internal', '    address: 127.0.0.1:1', `    id: ${ID}`, '  - host: A.internal', '    address: 127.0.0.1:2', `    id: ${ID}`]),
      [/^routes\.yaml:6:11: routes\[1\]\.host: "A\.internal" is listed twice$/]],
    ['duplicate host:port', route(['  - host: a.internal:8080', '    address: 127.0.0.1:1', `    id: ${ID}`, '  - host: a.internal:8080', '    address: 127.0.0.1:2', `    id: ${ID}`]),
      [/^routes\.yaml:6:11: routes\[1\]\.host: "a\.internal:8080" is listed twice$/]],
    ['version 2', 'version: 2\nroutes: []\n', [/^routes\.yaml:1:10: version: expected 1$/]],
    ['no version', 'routes: []\n', [/^routes\.yaml:1:1: version: expected 1$/]],
    ['routes not a list', 'version: 1\nroutes:\n  host: a.internal\n', [/^routes\.yaml:3:3: routes: expected a list$/]],
    ['a route not a mapping', route(['  - a.internal']), [/^routes\.yaml:3:5: routes\[0\]: expected a mapping with host, address, id$/]],
    ['document not a mapping', '- version: 1\n', [/^routes\.yaml:1:1: expected a mapping with version and routes$/]],
    ['empty document', '', [/^routes\.yaml: expected a mapping with version and routes$/]],
    ['YAML syntax', 'version: 1\nroutes: [\n', [/^routes\.yaml:\d+:\d+: YAML syntax: /]],
    ['duplicate key', route(['  - host: a.internal', '    host: b.internal', '    address: 127.0.0.1:1', `    id: ${ID}`]), [/^routes\.yaml:4:5: YAML syntax: Map keys must be unique/]],
    ['serviceAccount on a host that is not name.namespace.svc', route(['  - host: payments.internal', '    address: 127.0.0.1:1', '    serviceAccount: payments']),
      [/^routes\.yaml:3:5: routes\[0\]: expected id \(or serviceAccount, for a name\.namespace\.svc host\)$/]],
    ['serviceAccount that is not a name', route(['  - host: payments.billing.svc', '    serviceAccount: "a/b"']), [/^routes\.yaml:4:21: routes\[0\]\.serviceAccount: not a valid service account name$/]],
    ['several problems, all listed', route(['  - host: a.internal', '    address: nope', '  - host: a.internal', '    address: 127.0.0.1:1', '    id: bad', '    extra: 1']),
      [/^routes\.yaml:4:14: routes\[0\]\.address/, /^routes\.yaml:3:5: routes\[0\]: expected id/, /^routes\.yaml:8:5: routes\[1\]: unknown key "extra"/, /^routes\.yaml:5:11: routes\[1\]\.host: "a\.internal" is listed twice/, /^routes\.yaml:7:9: routes\[1\]\.id/]]
  ]
  for (const [name, text, expected] of cases) {
    const problems = problemsOf(text)
    t.equal(problems.length, expected.length, `${name}: ${expected.length} problem(s): ${JSON.stringify(problems)}`)
    for (const re of expected) t.ok(problems.some(p => re.test(p)), `${name}: ${String(re)}`)
  }
  const err = (() => { try { parseRoutes('version: 2\n', 'r.yaml', TD) } catch (e) { return e as RoutesInvalidError } return undefined })()
  t.equal(err?.code, 'GH_ROUTES_INVALID', 'stable code')
  t.match(err?.message, /r\.yaml:1:10: version: expected 1/, 'the message lists the problems')
  t.throws(() => parseRoutes(route(['  - host: payments.billing.svc', '    serviceAccount: payments']), 'routes.yaml', undefined),
    { code: 'GH_ROUTES_INVALID', problems: [/^routes\.yaml:3:5: routes\[0\]: expected id/] },
    'serviceAccount needs a trust domain (unknown until an identity is loaded)')
})

t.test('a running sidecar follows its routes file; an invalid one keeps the last good table', async t => {
  const dir = tempDir(t, 'gh-outbound-routes-')
  const pki = new Pki(dir, TD)
  const OTHER_ID = `spiffe://${TD}/ns/b2/sa/callee`
  const bApp = await startApp(t)
  const b2App = await startApp(t)
  const b = await startWorkload(t, { pki, name: 'b', id: CALLEE_ID, upstreamPort: bApp.port, allow: [CALLER_ID] })
  const b2 = await startWorkload(t, { pki, name: 'b2', id: OTHER_ID, upstreamPort: b2App.port, allow: [CALLER_ID] })
  const a = await startWorkload(t, { pki, name: 'a', id: CALLER_ID, routes: routesYaml([{ host: 'b.internal', address: b.inboundAddress, id: CALLEE_ID }]) })
  const routesFile = a.routesFile!
  const proxy = a.outboundPort
  t.match(a.logs.find(l => l.event === 'routes.loaded'), { file: routesFile, routes: 1 }, 'loaded at start')

  const first = await viaProxy(proxy, 'http://b.internal/one')
  t.equal(first.status, 200)
  t.equal(bApp.seen.length, 1, 'b.internal goes to B')
  const xfccBy = (app: typeof bApp): string | undefined => String(app.seen.at(-1)?.headers['x-forwarded-client-cert']).split(';')[0]

  // Point b.internal at B2 (another destination with another ID).
  replaceFile(routesFile, routesYaml([{ host: 'b.internal', address: b2.inboundAddress, id: OTHER_ID }]))
  await waitFor(async () => (await viaProxy(proxy, 'http://b.internal/probe')).status === 200 && b2App.seen.length > 0, 5000, 'b.internal to reach B2')
  t.equal(xfccBy(b2App), `By=${OTHER_ID}`, 'b.internal now goes to B2, verified as B2\'s ID')
  const seenB = bApp.seen.length
  const moved = await viaProxy(proxy, 'http://b.internal/two')
  t.equal(moved.status, 200)
  t.equal(bApp.seen.length, seenB, 'B gets nothing after the change (its pooled connection was not reused)')
  t.equal(b2App.seen.at(-1)?.url, '/two')
  t.ok(a.logs.filter(l => l.event === 'routes.loaded').length >= 2, 'the reload is logged')

  // An invalid file: logged with file:line:col, last good table kept.
  const failedBefore = a.logs.filter(l => l.event === 'routes.reload_failed').length
  replaceFile(routesFile, route(['  - host: b.internal', '    address: 127.0.0.1', `    id: ${CALLEE_ID}`, '    colour: red']))
  await waitFor(() => a.logs.filter(l => l.event === 'routes.reload_failed').length > failedBefore, 5000, 'routes.reload_failed')
  const failed = a.logs.findLast(l => l.event === 'routes.reload_failed')!
  t.equal(failed.code, 'GH_ROUTES_INVALID')
  t.equal(failed.level, 50, 'logged as an error')
  t.ok((failed.problems as string[]).some(p => p.startsWith(`${routesFile}:4:14: routes[0].address`)), 'with file:line:col of the bad address')
  t.ok((failed.problems as string[]).some(p => p.startsWith(`${routesFile}:6:5: routes[0]: unknown key "colour"`)), 'and of the unknown key')
  const kept = await viaProxy(proxy, 'http://b.internal/three')
  t.equal(kept.status, 200, 'the last good table keeps serving')
  t.equal(b2App.seen.at(-1)?.url, '/three', 'still to B2')

  // A deleted file is also a failed reload, not an empty table.
  const failedBeforeDelete = a.logs.filter(l => l.event === 'routes.reload_failed').length
  unlinkSync(routesFile)
  await waitFor(() => a.logs.filter(l => l.event === 'routes.reload_failed').length > failedBeforeDelete, 5000, 'routes.reload_failed for the missing file')
  t.equal((await viaProxy(proxy, 'http://b.internal/four')).status, 200, 'a missing routes file keeps the last good table')

  // Remove the route: b.internal is now unknown; a new host appears.
  writeFileSync(routesFile, routesYaml([{ host: 'c.internal', address: b.inboundAddress, id: CALLEE_ID }]))
  await waitFor(async () => (await viaProxy(proxy, 'http://b.internal/probe')).status === 403, 5000, 'b.internal to be refused')
  const gone = await viaProxy(proxy, 'http://b.internal/five')
  t.equal(gone.status, 403)
  t.match(json(gone), { error: 'GH_OUTBOUND_UNKNOWN_DESTINATION' })
  const added = await viaProxy(proxy, 'http://c.internal/six')
  t.equal(added.status, 200, 'the newly listed host is routed')
  t.equal(bApp.seen.at(-1)?.headers.host, 'c.internal')
})

t.test('an invalid routes file at start fails the start and leaves nothing listening', async t => {
  const dir = tempDir(t, 'gh-outbound-routes-start-')
  const pki = new Pki(dir, TD)
  const servers = (): number => process.getActiveResourcesInfo().filter(r => r === 'TCPServerWrap').length
  const before = servers()
  await t.rejects(startWorkload(t, { pki, name: 'bad', id: CALLER_ID, routes: 'version: 2\nroutes: []\n' }), { code: 'GH_ROUTES_INVALID', message: /bad-routes\.yaml:1:10: version: expected 1/ })
  t.equal(servers(), before, 'no listener was left open (the process can exit)')
})
