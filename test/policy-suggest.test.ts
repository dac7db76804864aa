import t from 'tap'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { Pki } from './helpers/mesh.ts'
import { gatehouseAsync } from './helpers/audit-log.ts'
import { writeMeshLogs, tamperOneLine, PAYMENTS, ORDERS, BILLING, CRON, BACKUP, EVIL } from './helpers/decision-logs.ts'
import { generalizePath, isVariableSegment, PolicySuggester } from '../src/policy/suggest.ts'
import { parsePolicy } from '../src/policy/load.ts'
import { tempDir } from './helpers/files.ts'

// `gatehouse policy suggest`: from a verified multi-sidecar log to a policy allowing exactly what
// was served (allowed, and denied in audit mode), grouped per caller, ids generalized one segment at
// a time, gRPC methods exact, TCP as ports; it checks, and replays against the same logs to zero flips.

t.test('variable segments: numbers, UUIDs, hex ids, dates, long tokens; routes and gRPC methods kept', async t => {
  for (const s of ['123', '3f2b8c1e-9a4d-4e7b-8c2f-1a2b3c4d5e6f', '5f3a9c00deadbeef', '2024-01-15', 'tok_9f8A7b6C5d4E3f2G1h0J']) t.ok(isVariableSegment(s), `${s} is an id`)
  for (const s of ['v1', 'orders', 'refunds', 'healthz', 'deadbeef', 'billing.v1.Ledger']) t.notOk(isVariableSegment(s), `${s} is a route`)
  t.equal(generalizePath('/v1/orders/123'), '/v1/orders/*')
  t.equal(generalizePath('/v1/orders/456'), '/v1/orders/*', '/v1/orders/123 and /v1/orders/456 are one pattern')
  t.equal(generalizePath('/v1/charges/3f2b8c1e-9a4d-4e7b-8c2f-1a2b3c4d5e6f/refunds'), '/v1/charges/*/refunds')
  t.equal(generalizePath('/v1/orders/123/'), '/v1/orders/*', 'no "*" pattern ends in "/"')
  t.equal(generalizePath('/billing.v1.Ledger/Record'), '/billing.v1.Ledger/Record', 'gRPC method exact')
  t.equal(generalizePath('/'), '/')
})

t.test('five or more names at one position become "*", still one segment; --widen collapses a prefix', async t => {
  const feed = (widen: boolean): string => {
    const s = new PolicySuggester({ callee: PAYMENTS, widen })
    const users = ['alice', 'bob', 'carol', 'dave', 'erin']
    for (const [i, u] of users.entries()) s.add({ msg: 'decision', callee: PAYMENTS, caller: ORDERS, decision: 'allow', method: 'GET', path: `/v1/users/${u}/profile`, time: `2025-01-0${i + 1}T00:00:00.000Z` })
    s.add({ msg: 'decision', callee: PAYMENTS, caller: ORDERS, decision: 'allow', method: 'GET', path: '/v1/users', time: '2025-01-09T00:00:00.000Z' })
    return s.yaml()
  }
  const narrow = parsePolicy(feed(false)).policy
  t.same(narrow.rules[0]!.paths, ['/v1/users', '/v1/users/*/profile'])
  const wide = parsePolicy(feed(true)).policy
  t.same(wide.rules[0]!.paths, ['/v1/users/**'], '--widen: one "**" under /v1/users')
  t.match(feed(false), /# 6 call\(s\), first seen 2025-01-01T00:00:00.000Z, last seen 2025-01-09T00:00:00.000Z/)
})

t.test('suggest → check → replay on signed multi-sidecar logs: zero flips', async t => {
  const dir = tempDir(t, 'gh-suggest-')
  const pki = new Pki(dir)
  const files = await writeMeshLogs(dir, pki)
  const run = async (...args: string[]): ReturnType<typeof gatehouseAsync> => await gatehouseAsync(args)
  const s = await run('policy', 'suggest', ...files, '--callee', PAYMENTS, '--trust-bundle', pki.bundleFile)
  t.equal(s.status, 0, s.stderr)
  const file = join(dir, 'suggested.yaml')
  writeFileSync(file, s.stdout)
  const check = await run('policy', 'check', file)
  t.equal(check.status, 0, check.stdout)
  const { policy } = parsePolicy(s.stdout, file)
  const byCaller = (caller: string): typeof policy.rules => policy.rules.filter(r => r.from.includes(caller))
  t.same(byCaller(ORDERS).map(r => [r.methods, r.paths]), [[['POST'], ['/v1/charges']], [['GET'], ['/v1/charges/*', '/v1/charges/*/refunds']]], 'orders: per method set, ids generalized')
  t.same(byCaller(BILLING)[0]?.paths, ['/billing.v1.Ledger/Get', '/billing.v1.Ledger/Record'], 'gRPC methods exact')
  t.same(byCaller(CRON)[0]?.paths, ['/v1/reports/*'], 'audit-mode traffic (served) is allowed')
  t.same(byCaller(BACKUP)[0]?.ports, [5432], 'TCP as ports')
  t.same(byCaller(EVIL), [], 'enforced denials are not allowed')
  t.notOk(s.stdout.includes('**'), 'never wider than one segment')
  t.match(s.stdout, /# 9 call\(s\), first seen \d{4}-.*Z, last seen .*Z\n {2}- name: orders-api-get/, 'each rule has its count and first/last seen')

  const replay = await run('policy', 'replay', file, ...files, '--callee', PAYMENTS, '--trust-bundle', pki.bundleFile, '-o', 'json')
  t.equal(replay.status, 0, replay.stdout + replay.stderr)
  const r = JSON.parse(replay.stdout) as { decisions: number, allowToDeny: number, denyToAllow: number }
  t.equal(r.decisions, 25)
  t.equal(r.allowToDeny, 0, 'nothing served is denied')
  t.equal(r.denyToAllow, 0, 'nothing denied is allowed')

  const min = await run('policy', 'suggest', ...files, '--callee', PAYMENTS, '--trust-bundle', pki.bundleFile, '--min-calls', '3')
  const minPolicy = parsePolicy(min.stdout).policy
  t.same(minPolicy.rules.find(r => r.from.includes(BILLING))?.paths, ['/billing.v1.Ledger/Record'], '--min-calls 3 leaves out a route seen twice')
  t.notOk(minPolicy.rules.some(r => r.ports !== undefined), 'and the TCP port seen twice')

  const future = await run('policy', 'suggest', ...files, '--callee', PAYMENTS, '--trust-bundle', pki.bundleFile, '--since', '2999-01-01T00:00:00Z')
  t.same(parsePolicy(future.stdout).policy.rules, [], '--since after all traffic: no rules')

  const widened = await run('policy', 'suggest', ...files, '--callee', PAYMENTS, '--trust-bundle', pki.bundleFile, '--widen')
  t.ok(parsePolicy(widened.stdout).policy.rules.some(r => r.paths?.includes('/v1/charges/**')), '--widen: /v1/charges/**')
})

t.test('a tampered log is refused (exit 1, the verdict on stderr) unless --unverified', async t => {
  const dir = tempDir(t, 'gh-suggest-tamper-')
  const pki = new Pki(dir)
  const files = await writeMeshLogs(dir, pki)
  tamperOneLine(files[0]!)
  const refused = await gatehouseAsync(['policy', 'suggest', ...files, '--callee', PAYMENTS, '--trust-bundle', pki.bundleFile])
  t.equal(refused.status, 1)
  t.equal(refused.stdout, '', 'no policy printed')
  t.match(refused.stderr, /refused: the logs do not verify \(TAMPERED/)
  const anyway = await gatehouseAsync(['policy', 'suggest', ...files, '--callee', PAYMENTS, '--unverified'])
  t.equal(anyway.status, 0, anyway.stderr)
  t.ok(parsePolicy(anyway.stdout).policy.rules.some(r => r.from.includes(EVIL)), 'read as it is: the edited line now allows the attacker')
  t.match(parseYaml(anyway.stdout), { version: 1 })
})
