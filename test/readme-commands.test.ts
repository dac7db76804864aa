import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { checkResults, fencedBlocks, readmeAlias, repoRoot, runSession, stepsOf, type FencedBlock, type Step } from './helpers/markdown-run.ts'

// Every command shown in README.md runs here, so the README cannot rot. Each "##" section is one
// session (one bash, commands in order, state such as `cd` kept) in its own temp directory; sessions
// run in parallel. Servers the README starts with "&" must log "listening" and are stopped at the
// end; the fixed ports the README names are replaced by free random ones. `gatehouse` is the README's
// own alias (the CLI from source on the Node 24 that npm ci installed). Console blocks must print
// what the README shows ("…" for any text, any number for a number).

const README = readFileSync(join(repoRoot, 'README.md'), 'utf8')

/** Not run, and why. Each must match a command of the README (checked below), so the list stays honest. */
const SKIPPED: Array<[RegExp, string]> = [
  [/^npm ci$/, 'reinstalls node_modules of the checkout these tests run from; .ci/run runs it before npm test'],
  [/^npm test$/, 'the whole suite, this file included; CI runs it'],
  [/^kubectl /, 'needs a Kubernetes cluster; test/deploy-kustomize-*.test.ts render deploy/ and check the objects']
]

/** Tools the README uses that a machine may lack: their commands are skipped, saying so, like other tests do. */
const MISSING_TOOLS: Array<[RegExp, string]> = spawnSync('curl', ['--version']).error === undefined
  ? []
  : [[/^(until )?curl /, 'curl is not installed here']]

/** The ports the README names: each session gets free random ones instead. */
const PORTS = [15443, 15006, 15020, 15001, 8080, 6379, 16379, 16006, 16020, 16001]
const PORT_ENV = { GATEHOUSE_INBOUND: 15006, GATEHOUSE_ADMIN: 15020, GATEHOUSE_OUTBOUND: 15001 }
/** Shorter certificate lifetimes for the demo (fewer seconds until its rotations), nothing else. */
const DEMO_ENV = { GATEHOUSE_LEAF_TTL: '4s' }

const blocks = fencedBlocks(README)
const sections = [...new Set(blocks.map(b => b.section))]
const bySection = (section: string): FencedBlock[] => blocks.filter(b => b.section === section)

t.test('the README shows commands only in blocks this test runs', async t => {
  for (const b of blocks) {
    t.ok(['sh', 'bash', 'console', 'yaml', ''].includes(b.lang), `README.md:${b.line}: block language "${b.lang}" is one the test knows`)
    if (b.lang === '') t.notOk(/^\$ /m.test(b.text), `README.md:${b.line}: an untagged block shows no "$ " command`)
    if (b.lang === 'yaml') t.ok(b.info.some(i => i.startsWith('file=')), `README.md:${b.line}: a YAML block is written to a file and used`)
  }
  const all = sections.flatMap(s => stepsOf(bySection(s), SKIPPED))
  for (const [re, why] of SKIPPED) t.ok(all.some(s => s.kind === 'skip' && re.test(s.shown)), `skip rule ${String(re)} (${why}) matches a README command`)
  for (const s of all.filter(x => x.kind === 'skip')) t.comment(`skipped: ${s.shown} (${s.skipReason ?? ''})`)
  t.ok(all.filter(s => s.kind !== 'skip').length >= 20, `${all.filter(s => s.kind !== 'skip').length} commands and files run`)
  t.ok(all.filter(s => s.kind === 'skip').length <= 5, 'the skip list stays short')
})

t.test('the documents the README links to exist', async t => {
  for (const m of README.matchAll(/\]\(((?:docs|deploy|bench)\/[^)#]+)\)/g)) t.ok(existsSync(join(repoRoot, m[1]!)), `${m[1]!} exists`)
})

t.test('every README command runs as shown', async t => {
  const alias = readmeAlias()
  const sessions = sections
    .map(section => ({ section, steps: stepsOf(bySection(section), [...SKIPPED, ...MISSING_TOOLS]) }))
    .filter(s => s.steps.some((x: Step) => x.kind !== 'skip'))
  t.ok(sessions.length >= 4, `${sessions.length} sections with commands: ${sessions.map(s => s.section).join('; ')}`)
  const runs = await Promise.all(sessions.map(async ({ section, steps }) => {
    const started = Date.now()
    const session = await runSession(t, steps, {
      skip: [...SKIPPED, ...MISSING_TOOLS],
      ports: PORTS,
      portEnv: PORT_ENV,
      env: DEMO_ENV,
      links: ['deploy'],
      prelude: [alias],
      inRepo: /^(npm |alias gatehouse=)/,
      timeoutMs: 75_000
    })
    return { section, session, ms: Date.now() - started }
  }))
  for (const { section, session, ms } of runs) {
    t.comment(`${section}: ${session.results.length} steps in ${ms} ms (${session.results.map(r => `${r.step.shown.slice(0, 24)}: ${String(r.ms)}`).join(", ")})`)
    checkResults(t, `README.md (${section})`, session)
  }
})
