import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { policyRevision } from '../src/policy/load.ts'
import { decide, type Decision } from '../src/policy/decide.ts'
import { PolicyStore } from '../src/policy/policy-store.ts'
import { createLogger, silentLogger } from '../src/log.ts'
import { request } from './helpers/policy-facts.ts'

// The policy file (docs/policy.md), the store that keeps the last good policy across bad reloads
// and watches the file. Parsing and validation: policy-parse.test.ts; matching semantics:
// policy-decide.test.ts.

interface LogLine { level: number, event?: string, code?: string, trigger?: string, problems?: string[], keptRevision?: string | null, revision?: string, msg: string }

function capturingLogger (): { logger: ReturnType<typeof createLogger>, lines: LogLine[] } {
  const lines: LogLine[] = []
  const logger = createLogger('policy-test', { level: 'debug', destination: { write: (s: string) => { lines.push(JSON.parse(s) as LogLine) } } })
  return { logger, lines }
}

const V1 = `version: 1
rules:
  - name: v1-rule
    from: ["spiffe://td/ns/a/sa/b"]
`
const V2 = `version: 1
rules:
  - name: v2-rule
    from: ["spiffe://td/ns/a/sa/b"]
`
const V3 = V2.replace('v2-rule', 'v3-rule')
const INVALID = `version: 1
rules:
  - name: broken
    from: ["spiffe://td/ns/a/sa/b"]
    method: [GET]
`

function decideWith (store: PolicyStore): Decision {
  const current = store.current
  if (current === undefined) throw new Error('no policy loaded')
  return decide(current.compiled, request('spiffe://td/ns/a/sa/b', 'GET', '/'))
}

t.test('PolicyStore keeps the last good policy', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-policy-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, V1)
  const results: string[] = []
  const { logger, lines } = capturingLogger()
  const store = new PolicyStore({ file, logger, onResult: r => { results.push(r) } })
  t.equal(store.current, undefined)

  t.equal(store.reload('start'), true)
  t.equal(store.current?.revision, policyRevision(V1))
  t.equal(store.current?.source, file)
  t.equal(decideWith(store).rule, 'v1-rule')
  t.same(results, ['success'])
  t.match(lines.at(-1), { event: 'policy.loaded', trigger: 'start', revision: policyRevision(V1), level: 30 })

  t.equal(store.reload('sighup'), true, 'the same file again')
  t.same(results, ['success', 'unchanged'])
  t.equal(store.current?.revision, policyRevision(V1))

  writeFileSync(file, INVALID)
  t.equal(store.reload('sighup'), false, 'an invalid file is refused')
  t.equal(store.current?.revision, policyRevision(V1), 'the revision is unchanged')
  t.equal(decideWith(store).rule, 'v1-rule', 'the last good policy still decides')
  t.same(results, ['success', 'unchanged', 'invalid'])
  const failed = lines.at(-1)!
  t.match(failed, { level: 50, event: 'policy.reload_failed', code: 'GH_POLICY_INVALID', trigger: 'sighup', keptRevision: policyRevision(V1) })
  t.same(failed.problems, [`${file}:5:5: rules[0]: unknown key "method" (expected one of name, mode, from, methods, paths, ports)`], 'the problem list, with the file name')

  writeFileSync(file, V2)
  t.equal(store.reload('sighup'), true)
  t.equal(store.current?.revision, policyRevision(V2), 'a valid new file replaces it')
  t.not(policyRevision(V2), policyRevision(V1))
  t.equal(decideWith(store).rule, 'v2-rule')
  t.same(results, ['success', 'unchanged', 'invalid', 'success'])

  unlinkSync(file)
  t.equal(store.reload('file-change'), false, 'a deleted file is refused')
  t.equal(store.current?.revision, policyRevision(V2), 'the last good one is kept')
  t.equal(decideWith(store).rule, 'v2-rule')
  t.same(results, ['success', 'unchanged', 'invalid', 'success', 'invalid'])
  t.match(lines.at(-1), { level: 50, event: 'policy.reload_failed', code: 'GH_POLICY_UNREADABLE', trigger: 'file-change', keptRevision: policyRevision(V2) })
  t.equal(lines.filter(l => l.event === 'policy.reload_failed').length, 2)
})

t.test('PolicyStore with no good policy yet', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-policy-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, 'version: 2\nrules: []\n')
  const { logger, lines } = capturingLogger()
  const store = new PolicyStore({ file, logger })
  t.equal(store.reload('start'), false)
  t.equal(store.current, undefined)
  t.match(lines.at(-1), { event: 'policy.reload_failed', code: 'GH_POLICY_INVALID', keptRevision: null })
  t.same(lines.at(-1)?.problems, [`${file}:1:10: version: expected 1`])
})

t.test('PolicyStore.watchFile picks up a change', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-policy-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, V1)
  const results: string[] = []
  const store = new PolicyStore({ file, logger: silentLogger, onResult: r => { results.push(r) } })
  t.teardown(() => { store.stop() })
  t.equal(store.reload('start'), true)
  store.watchFile(50)
  await sleep(200) // let the first poll take its baseline

  const waitFor = async (what: string, cond: () => boolean, timeoutMs = 1000): Promise<void> => {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      if (Date.now() > deadline) { t.fail(`${what}: not seen within ${timeoutMs} ms`); return }
      await sleep(10) // the polling interval of this test's own wait loop
    }
    t.pass(what)
  }

  writeFileSync(file, V2)
  await waitFor('a valid change is loaded', () => store.current?.revision === policyRevision(V2))
  t.equal(decideWith(store).rule, 'v2-rule')

  writeFileSync(file, INVALID)
  await waitFor('an invalid change is reported', () => results.includes('invalid'))
  t.equal(store.current?.revision, policyRevision(V2), 'and not applied')

  writeFileSync(file, V3)
  await waitFor('a valid change after an invalid one is loaded', () => store.current?.revision === policyRevision(V3))
  t.equal(decideWith(store).rule, 'v3-rule')
})
