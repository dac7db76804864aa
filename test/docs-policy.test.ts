import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DOC_FILES, checkResults, fencedBlocks, infoValue, readmeAlias, repoRoot, runSession, stepsOf } from './helpers/markdown-run.ts'

// Every policy example in the docs is checked. docs/policy.md is run top to bottom: each ```yaml
// block is written to its file=, each one marked "policy" must pass `gatehouse policy check`, and
// each `$ gatehouse policy …` line must print what the page shows. Policy examples in the README are
// run the same way by test/readme-commands.test.ts; here we only make sure none is left unmarked.

const read = (file: string): string => readFileSync(join(repoRoot, file), 'utf8')
const looksLikePolicy = (yaml: string): boolean => /^version:/m.test(yaml) && /^(rules|deny):/m.test(yaml)

t.test('every YAML policy in the docs is marked to be run, and written to a file', async t => {
  let policies = 0
  for (const file of DOC_FILES) {
    for (const b of fencedBlocks(read(file))) {
      if (b.lang !== 'yaml' || !looksLikePolicy(b.text)) continue
      policies++
      const name = infoValue(b, 'file')
      t.ok(name !== undefined && (b.info.includes('policy') || b.info.includes('invalid')), `${file}:${b.line}: a policy example is marked "file=NAME policy" (or "invalid")`)
      // An invalid example is there to show the checker's output: a command of the same document must show it.
      if (b.info.includes('invalid')) t.ok(fencedBlocks(read(file)).some(c => c.lang === 'console' && c.text.includes(`$ gatehouse policy check ${name ?? '?'}\n`)), `${file}:${b.line}: its policy check output is shown`)
    }
  }
  t.ok(policies >= 4, `${policies} policy examples`)
})

t.test('docs/policy.md: every example policy checks, every command prints what is shown', async t => {
  const blocks = fencedBlocks(read('docs/policy.md'))
  const steps = stepsOf(blocks, [])
  for (const b of blocks.filter(x => x.info.includes('policy'))) {
    t.ok(steps.some(s => (s.kind === 'policy-check' || s.kind === 'console') && s.shown === `gatehouse policy check ${infoValue(b, 'file') ?? '?'}`), `docs/policy.md:${b.line}: the policy is checked`)
  }
  t.ok(steps.filter(s => s.kind === 'console').length >= 6, 'commands run')
  t.notOk(blocks.some(b => b.lang === 'sh' || b.lang === 'bash'), 'commands are shown with their output (console blocks)')
  const session = await runSession(t, steps, { skip: [], prelude: [readmeAlias()], timeoutMs: 150_000 })
  checkResults(t, 'docs/policy.md', session)
})
