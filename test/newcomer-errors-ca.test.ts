import t from 'tap'
import { newcomerFixture, runCases, isCaCase } from './helpers/newcomer-cases.ts'

// Every `gatehouse ca …` subcommand run wrong the way a newcomer would: a required flag missing, a
// file that does not exist, a listen port already taken, an unreadable key, bad YAML. Each must answer
// with exactly one line on stderr, "gatehouse <command>: GH_CODE: what is wrong; what to do", naming
// the flag or file, exit 2 (configuration or usage) or 1 (anything else), and no stack trace unless
// --debug. The case table is in helpers/newcomer-cases.ts; the other commands, and the check that the
// table covers every subcommand: newcomer-errors-commands.test.ts.

const fx = newcomerFixture(t)

t.test('every ca subcommand run wrong: one line naming what is wrong and what to do, non-zero exit, no stack', async t => {
  await runCases(t, fx, isCaCase)
})
