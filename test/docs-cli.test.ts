import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { renderReference } from '../src/cli/reference.ts'
import { loadCommands } from '../src/cli/commands.ts'
import { gatehouse } from './helpers/run-cli.ts'

const commands = await loadCommands()

t.test('docs/cli.md is exactly what the schemas generate (regenerate: gatehouse docs cli > docs/cli.md)', async t => {
  const committed = readFileSync(fileURLToPath(new URL('../docs/cli.md', import.meta.url)), 'utf8')
  t.equal(committed, renderReference(commands), 'docs/cli.md is up to date')
  for (const name of Object.keys(commands)) t.match(committed, `## gatehouse ${name}\n`, `${name} is documented`)
})

t.test('every command answers --help with its flags, and an unknown command is a usage error', async t => {
  for (const [name, cmd] of Object.entries(commands)) {
    const r = gatehouse([...name.split(' '), '--help'])
    t.equal(r.status, 0, `${name} --help`)
    for (const flag of Object.keys(cmd.schema)) t.match(r.stdout, `--${flag}`, `${name} --help lists --${flag}`)
    for (const arg of cmd.args) t.match(r.stdout, `\n  ${arg.name} `, `${name} --help explains ${arg.name}`)
  }
  const bad = gatehouse(['frobnicate'])
  t.equal(bad.status, 2)
  t.equal(bad.stderr, 'gatehouse: GH_USAGE: unknown command "frobnicate"; run \'gatehouse --help\' for the list of commands\n', 'one line, and where the list is')
  t.match(gatehouse(['--help']).stderr, /usage: gatehouse <command>/)
})
