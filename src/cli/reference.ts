import { readFileSync } from 'node:fs'
import { closest, defaultText, envName, flagHelp, flagSpelling, loadConfig, usage, type Schema } from '../config.ts'
import { UsageError } from '../errors.ts'
import { commands, loadCommand, loadCommands, type Command, type Positional } from './commands.ts'
import { OUTPUT, formatData, type Runner } from './runner.ts'

// The CLI's own reference, rendered from the command table and each command's option schema: the
// terminal help (gatehouse --help, gatehouse help <command>, <command> --help, a group's help) and
// docs/cli.md (gatehouse docs cli). One source, so the help and the docs cannot drift apart.

type Documented = Pick<Command, 'schema' | 'summary' | 'args' | 'exits'>

/** The words a command line can start with: commands ("proxy") and groups ("ca"). */
export const firstWords = (): string[] => nextWords('')
/** The commands of a group, by their full names ("ca init"…, "ca quarantine add"…). */
export const subcommandsOf = (group: string): string[] => Object.keys(commands).filter(n => n.startsWith(`${group} `))
/** The words that can follow a group ("init", "quarantine"… after "ca"; every first word after ""). */
export const nextWords = (prefix: string): string[] =>
  [...new Set((prefix === '' ? Object.keys(commands) : subcommandsOf(prefix).map(n => n.slice(prefix.length + 1))).map(n => n.split(' ')[0]!))]
/** Groups: the leading words of longer commands ("ca", "ca quarantine", "policy"…); "inject" is a command and a group. */
export const groups = (): string[] => [...new Set(Object.keys(commands).flatMap(n => n.split(' ').slice(1).map((_, i) => n.split(' ').slice(0, i + 1).join(' '))))]

/** The longest run of leading words for which `known` holds ("ca quarantine add" from ["ca", "quarantine", "add", "--dir", …]). */
function longestPrefix (words: string[], known: (name: string) => boolean): string | undefined {
  for (let n = Math.min(words.length, 3); n > 0; n--) if (known(words.slice(0, n).join(' '))) return words.slice(0, n).join(' ')
  return undefined
}

/** The command the words name, if any. */
export const commandNamed = (words: string[]): string | undefined => longestPrefix(words, n => n in commands)
/** The group the words start with, if any. */
export const groupNamed = (words: string[]): string | undefined => longestPrefix(words, n => groups().includes(n))

const listing = (rows: Array<[string, string]>): string => {
  const width = Math.max(...rows.map(([a]) => a.length))
  return rows.map(([a, b]) => `  ${a.padEnd(width)}  ${b}`).join('\n')
}

const synopsis = (name: string, args: Positional[]): string => `gatehouse ${name}${args.map(a => ` ${a.name}`).join('')} [flags]`

export function topHelp (): string {
  return `usage: gatehouse <command> [flags]\n\nCommands:\n${listing(Object.entries(commands).map(([c, e]) => [c, e.summary]))}\n\n` +
    'Run \'gatehouse help <command>\' or \'gatehouse <command> --help\' for its arguments and flags.\n' +
    'Every command also takes --config FILE, --debug and -h/--help; \'gatehouse --version\' prints the version.\n'
}

export function groupHelp (group: string): string {
  const subs = subcommandsOf(group)
  const own = commands[group] === undefined ? [] : [[group, commands[group].summary] as [string, string]]
  return `usage: gatehouse ${group} <command> [flags]\n\nCommands:\n${listing([...own, ...subs.map((n): [string, string] => [n, commands[n]!.summary])])}\n\n` +
    `Run 'gatehouse ${group} <command> --help' for its arguments and flags.\n`
}

/** `gatehouse <command> --help`: what it does, its arguments, subcommands, flags and exit statuses. */
export function commandHelp (name: string, cmd: Documented): string {
  const parts = [`gatehouse ${name}: ${cmd.summary}`, `Usage:\n  ${synopsis(name, cmd.args)}`]
  if (cmd.args.length > 0) parts.push(`Arguments:\n${listing(cmd.args.map(a => [a.name, a.help]))}`)
  const subs = subcommandsOf(name)
  if (subs.length > 0) parts.push(`Subcommands:\n${listing(subs.map(n => [n, commands[n]!.summary]))}`)
  parts.push(usage(cmd.schema))
  if (cmd.exits !== undefined) parts.push(`Exit status: ${cmd.exits}.`)
  return `${parts.join('\n\n')}\n`
}

/** A usage error for words that name no command: "did you mean", or the group's commands. */
export function unknownCommand (argv: string[]): UsageError {
  const names = Object.keys(commands)
  const words = (n: number): string[] => argv.slice(0, n).filter(a => !a.startsWith('-'))
  // Two words ("polcy check"), three in a two-word group ("ca quarantine bogus").
  const given = groups().includes(words(2).join(' ')) ? words(3) : words(2)
  const typed = given.join(' ')
  const group = groupNamed(given)
  // "ca bogus": list that group's commands.
  if (group !== undefined) {
    const sub = subcommandsOf(group)
    const guess = typed === group ? undefined : closest(typed, sub)
    return new UsageError(`${typed === group ? `'${group}' needs a subcommand` : `unknown command "${typed}"`}${guess === undefined ? '' : ` (did you mean "${guess}"?)`}: one of ${sub.join(', ')}; run 'gatehouse --help' for every command`)
  }
  const guess = closest(typed, names) ?? closest(given[0] ?? '', names)
  return new UsageError(`unknown command "${typed || argv[0] || ''}"${guess === undefined ? '' : ` (did you mean "${guess}"?)`}; run 'gatehouse --help' for the list of commands`)
}

/** `gatehouse help [COMMAND…]`: the same text as `--help`, for a command, a group, or everything. */
export const helpCommand: Runner = async (argv, io) => {
  const words = loadConfig('help', {}, { argv }).positionals
  const name = commandNamed(words)
  if (words.length === 0) io.out(topHelp())
  else if (name !== undefined) io.out(commandHelp(name, await loadCommand(name)))
  else if (groups().includes(words.join(' '))) io.out(groupHelp(words.join(' ')))
  else throw unknownCommand(words)
  return 0
}

const CONVENTIONS = [
  '- **Help**: `gatehouse --help` (or `gatehouse help`) lists the commands; `gatehouse help <command>` and `gatehouse <command> --help` (or `-h`) show a command\'s arguments, flags (with the values an enum flag takes) and exit statuses; `gatehouse ca` (or `gatehouse ca --help`) lists a group\'s commands.',
  '- **Version**: `gatehouse --version`, or `gatehouse version -o json`.',
  '- **Output**: every command that prints data takes `-o/--output`: `table` (the default, for people), `json` or `yaml` (for scripts); `inject` prints `yaml` (what `kubectl apply -f` reads) or `json`. Older spellings stay accepted: `--format` on `audit query` and `audit verify` (where `text` means `table`), `-f` for `--file` on `inject`.',
  '- **Exit status**: 0 success, 1 error (one line on stderr: `gatehouse <command>: GH_CODE: what is wrong; what to do`), 2 usage or configuration error. Commands whose status is an answer list theirs below: `policy explain` exits 3 when the request would be refused, so `if gatehouse policy explain …; then` tests "allowed".',
  '- **Completion**: `source <(gatehouse completion bash)` in bash or zsh, `gatehouse completion fish | source` in fish: commands, flags, enum values and file arguments, from the same command table.'
]

const INTRO = [
  'Generated by `gatehouse docs cli` from the option schemas; `test/docs-cli.test.ts` fails if this file is stale.',
  'Every flag can also be given as an environment variable (`GATEHOUSE_<FLAG>`) or as a key of a YAML file passed with `--config FILE` (or `GATEHOUSE_CONFIG`). Precedence, lowest first: default, file, environment, flag. Add `--debug` to any command for stack traces.',
  `## Conventions\n\nThe CLI follows kubectl's, istioctl's and linkerd's conventions:\n\n${CONVENTIONS.join('\n')}`,
  '**Why no CLI library.** Each command declares its options once, in one typed schema that drives its flags, `GATEHOUSE_*` variables, `--config` file keys, validation (every problem reported at once), the typed values the code reads, help, completion and this page. commander (or yargs) would parse the flags and print help, but needs a second description of every option, and does not read environment variables and a config file through the same typed validation. Positional arguments and exit statuses are declared in the command table beside each schema.'
]

/** docs/cli.md: the conventions, then every command with its arguments, flags and exit statuses. */
export function renderReference (all: Record<string, Documented>): string {
  const out = ['# gatehouse CLI reference', '', ...INTRO.flatMap(p => [p, ''])]
  for (const [name, cmd] of Object.entries(all)) {
    out.push(`## gatehouse ${name}`, '', cmd.summary, '', `Usage: \`${synopsis(name, cmd.args)}\``, '')
    for (const a of cmd.args) out.push(`- \`${a.name}\`: ${a.help}`)
    if (cmd.args.length > 0) out.push('')
    if (cmd.exits !== undefined) out.push(`Exit status: ${cmd.exits}.`, '')
    out.push(...flagTable(cmd.schema))
  }
  return `${out.join('\n')}\n`
}

function flagTable (schema: Schema): string[] {
  const entries = Object.entries(schema)
  if (entries.length === 0) return ['No flags.', '']
  const rows = entries.map(([flag, spec]) => {
    const dflt = spec.default === undefined ? (spec.required === true ? '**required**' : '') : `\`${defaultText(spec.default)}\``
    const kind = spec.kind === 'enum' ? `one of ${(spec.values ?? []).join(', ')}` : spec.kind
    return `| \`${flagSpelling(flag, spec)}\` | \`${envName(flag)}\` | \`${flag}\` | ${dflt} | ${flagHelp(spec).replace(/\|/g, '\\|')} (${kind}) |`
  })
  return ['| flag | env | config key | default | |', '|---|---|---|---|---|', ...rows, '']
}

export const docsCli: Runner = async (argv, io) => {
  loadConfig('docs cli', {}, { argv, maxPositionals: 0 })
  io.out(renderReference(await loadCommands()))
  return 0
}

export const versionSchema = { ...OUTPUT } as const satisfies Schema

/** The version in package.json (dist/cli/ and src/cli/ are both two levels below it). */
const packageVersion = (): string => (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

export const version: Runner = async (argv, io) => {
  const c = loadConfig('version', versionSchema, { argv, maxPositionals: 0 })
  const data = { version: packageVersion(), node: process.versions.node }
  io.out(c.output === 'table' ? `gatehouse ${data.version} (node ${data.node})\n` : formatData(c.output, data))
  return 0
}
