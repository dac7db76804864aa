import t from 'tap'
import { gatehouseAsync } from './helpers/audit-log.ts'
import { newcomerFixture, runCases, isCaCase } from './helpers/newcomer-cases.ts'

// Every subcommand but `gatehouse ca …` run wrong the way a newcomer would: a required flag missing, a
// file that does not exist, a listen port already taken, an unreadable key, bad YAML. Each must answer
// with exactly one line on stderr, "gatehouse <command>: GH_CODE: what is wrong; what to do", naming
// the flag or file, exit 2 (configuration or usage) or 1 (anything else), and no stack trace unless
// --debug. The case table is in helpers/newcomer-cases.ts; the ca commands run in
// newcomer-errors-ca.test.ts, and the whole table is checked here to cover every subcommand.

const fx = newcomerFixture(t)
const { badYaml, file } = fx

t.test('every subcommand run wrong: one line naming what is wrong and what to do, non-zero exit, no stack', async t => {
  const table = await runCases(t, fx, c => !isCaCase(c))
  // The whole table, the ca cases (newcomer-errors-ca.test.ts) included.
  const { commands } = await import('../src/cli/commands.ts')
  t.same([...Object.keys(commands)].filter(n => !table.some(c => c.cmd === n)), [], 'every subcommand has cases')
})

t.test('policy check reports a bad YAML file on stdout (its report), with line and column, exit 1', async t => {
  const r = await gatehouseAsync(['policy', 'check', badYaml])
  t.equal(r.status, 1)
  t.match(r.stdout, `${badYaml}:1:`)
  t.match(r.stdout, /YAML syntax/)
  t.match(r.stdout, /\d+ problem\(s\)\n$/)
  t.equal(r.stderr, '', 'nothing on stderr')
})

t.test('an upper-case trust domain in a policy says it must be lower case, and how to write it', async t => {
  const upper = file('upper.yaml', 'version: 1\nrules:\n  - name: r\n    from: ["spiffe://Example.org/ns/web/sa/web"]\n')
  const r = await gatehouseAsync(['policy', 'check', upper])
  t.equal(r.status, 1)
  t.match(r.stdout, `${upper}:4:12: rules[0].from: the trust domain "Example.org" must be lower case: write "example.org"`)
  t.notMatch(r.stdout, /characters are limited/, 'not the generic character list')
})
