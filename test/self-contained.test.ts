import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, sep } from 'node:path'
import { pathToFileURL } from 'node:url'
import { repoRoot } from './helpers/markdown-run.ts'

// The repository is self-contained: a plain `git clone` with nothing beside it passes its tests.
// Nothing tracked points outside the checkout (a sibling directory, a design file kept elsewhere),
// and a fresh clone, alone in its parent directory, finds every corpus file inside itself and runs
// the corpus tests. The clone holds committed files only: this checks what was committed.

/** What must never appear in a tracked file: a path to a sibling of the checkout, or a design file outside it. */
const OUTSIDE = '\\.\\./shared|shared/(corpora|DESIGN)|DESIGN\\.md'
/** Corpus tests run inside the clone (the fast ones; the rest are checked by file below). */
const RUN_IN_CLONE = ['spiffe-id', 'policy-normalize', 'inject-corpus']

const git = (args: string[], cwd: string): ReturnType<typeof spawnSync> =>
  spawnSync('git', args, { cwd, encoding: 'utf8', timeout: 60_000 })

const notGit = git(['rev-parse', '--is-inside-work-tree'], repoRoot).status !== 0
const skip = notGit ? 'not a git checkout (or git is not installed)' : false

/** The environment for a test run inside the clone: without tap's own runner settings or a corpora override. */
function cleanEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^(_?TAP|NODE_OPTIONS$|GATEHOUSE_CORPORA$)/.test(k)) env[k] = v
  return env
}

t.test('no tracked file refers to anything outside the repository', { skip }, async t => {
  const r = git(['grep', '-nE', OUTSIDE, '--', '.', ':!package-lock.json'], repoRoot)
  t.equal(r.status, 1, 'git grep finds nothing (exit 1 means no match)')
  t.equal(String(r.stdout), '', `no line matches /${OUTSIDE}/:\n${String(r.stdout)}${String(r.stderr)}`)
})

t.test('a fresh clone, alone in its directory, holds everything the tests read', { skip }, async t => {
  const tmp = mkdtempSync(join(tmpdir(), 'gatehouse-self-contained-'))
  t.teardown(() => { rmSync(tmp, { recursive: true, force: true }) })
  const clone = join(tmp, 'only', 'gatehouse')
  const cloned = git(['clone', '-q', repoRoot, clone], tmp)
  t.equal(cloned.status, 0, `git clone: ${String(cloned.stderr)}`)
  if (cloned.status !== 0) return
  t.same(readdirSync(join(tmp, 'only')), ['gatehouse'], 'the clone has nothing beside it')
  // Dependencies are not in git: the clone uses this checkout's installed ones.
  symlinkSync(join(repoRoot, 'node_modules'), join(clone, 'node_modules'), 'dir')
  const cloneReal = realpathSync(clone)
  const inside = (p: string): boolean => realpathSync(p).startsWith(cloneReal + sep)

  await t.test('test/helpers/corpora.ts in the clone resolves every corpus file inside the clone', async t => {
    const saved = process.env.GATEHOUSE_CORPORA
    delete process.env.GATEHOUSE_CORPORA
    t.teardown(() => { if (saved !== undefined) process.env.GATEHOUSE_CORPORA = saved })
    const helper = await import(pathToFileURL(join(clone, 'test', 'helpers', 'corpora.ts')).href) as typeof import('./helpers/corpora.ts')
    t.ok(inside(helper.corporaDir), `corporaDir ${helper.corporaDir} is inside the clone`)

    // Every committed corpus file.
    const committed = String(git(['ls-files', '--', 'test/corpora'], clone).stdout).split('\n').filter(f => f !== '')
    t.ok(committed.length >= 25, `${committed.length} corpus files committed`)
    const missing = committed.filter(f => {
      try { return !inside(helper.corpusPath(...f.slice('test/corpora/'.length).split('/'))) } catch { return true }
    })
    t.same(missing, [], 'each resolves through corpusPath() to a file inside the clone')

    // Every file the corpus tests name: literally in their source, or through an index or checklist.
    const tests = readdirSync(join(clone, 'test')).filter(f => f.endsWith('.test.ts') && f !== 'self-contained.test.ts')
      .filter(f => readFileSync(join(clone, 'test', f), 'utf8').includes('helpers/corpora.ts'))
    t.ok(tests.length >= 5, `${tests.length} test files read corpora: ${tests.join(', ')}`)
    const named: Array<[string, string]> = []
    for (const f of tests) {
      const src = readFileSync(join(clone, 'test', f), 'utf8')
      for (const m of src.matchAll(/(?:readCorpusJson|corpusPath)(?:<[^>]*>)?\('([\w.-]+)'(?:, '([\w./-]+)')?/g)) named.push([f, m[2] === undefined ? m[1]! : `${m[1]!}/${m[2]}`])
      for (const m of src.matchAll(/'([\w-]+\.(?:json|pem))'/g)) {
        if (!named.some(([, n]) => n.endsWith(`/${m[1]!}`))) named.push([f, committed.find(c => c.endsWith(`/${m[1]!}`))?.slice('test/corpora/'.length) ?? `?/${m[1]!}`])
      }
    }
    for (const e of helper.readCorpusJson<{ go_spiffe_fixtures: Array<{ file: string }> }>('x509-svid', 'x509_svid_checklist.json').go_spiffe_fixtures) named.push(['svid-checklist-chain.test.ts', `x509-svid/${e.file}`])
    for (const e of helper.readCorpusJson<{ files: Array<{ file: string }> }>('admission-review', 'index.json').files) named.push(['inject-corpus.test.ts', `admission-review/${e.file}`])
    const unresolved = named.filter(([, n]) => !existsSync(join(helper.corporaDir, n)) || !inside(join(helper.corporaDir, n)))
    t.same(unresolved, [], `all ${named.length} names resolve inside the clone`)
  })

  for (const name of RUN_IN_CLONE) {
    await t.test(`test/${name}.test.ts passes inside the clone`, async t => {
      const r = spawnSync(process.execPath, [join('test', `${name}.test.ts`)], { cwd: clone, env: cleanEnv(), encoding: 'utf8', timeout: 60_000 })
      const summary = /# \{ total: (\d+), pass: (\d+)[^}]*\}/.exec(r.stdout)
      t.equal(r.status, 0, `exit 0${r.status === 0 ? '' : `:\n${r.stdout.split('\n').filter(l => /not ok|Error/.test(l)).slice(0, 20).join('\n')}\n${r.stderr.slice(-2000)}`}`)
      t.ok(summary !== null && summary[1] === summary[2] && Number(summary[1]) > 0, `all assertions passed (${summary?.[0] ?? 'no summary'})`)
    })
  }
})
