#!/usr/bin/env node
import { GatehouseError, ConfigInvalidError, UsageError } from './errors.ts'
import { usage, closest } from './config.ts'
import type { CliIo } from './cli/runner.ts'
import { commands, loadCommand } from './cli/commands.ts'

// Entry point: picks the subcommand, runs it, and turns an error into ONE line on stderr,
// "gatehouse <command>: GH_CODE: what is wrong; what to do", with exit status 2 (configuration or
// usage) or 1 (anything else). --debug (or GATEHOUSE_DEBUG=1) adds the stack. This file and src/cli/
// are the only places that write to stdout/stderr directly: everything else logs through pino.

const HINTS: Record<string, string> = {
  EADDRINUSE: 'another process is listening there: stop it or choose another address',
  EACCES: 'permission denied: check the file mode, or use a port above 1023',
  ENOENT: 'no such file or directory: check the path',
  EISDIR: 'a directory was given where a file is expected: check the path',
  EADDRNOTAVAIL: 'that address is not on this machine',
  ECONNREFUSED: 'nothing is listening there'
}

/** What to do, for errors whose message says what is wrong but (coming from a library) not what to do next. */
const WHAT_TO_DO: Record<string, string> = {
  GH_POLICY_INVALID: 'fix the policy file at the line:column shown (\'gatehouse policy check FILE\' lists every problem)',
  GH_ROUTES_INVALID: 'fix the routes file at the line:column shown',
  GH_INJECT_INVALID: 'fix the manifest',
  GH_CA_MISSING: 'check --dir, or create a CA with \'gatehouse ca init --dir DIR --trust-domain TD\''
}

/** Problem lists ("...:\n  - a\n  - b") become "...: a; b": the error is one line, whatever its source. */
const oneLine = (text: string): string => text.replace(/:\n\s*- /, ': ').replace(/\n\s*- /g, '; ').replace(/\s*\n\s*/g, ' ').trim()

/** One line for an error that is not a GatehouseError (a bug, or a system error no check caught). */
function describeOther (err: unknown): string {
  const e = err as NodeJS.ErrnoException
  if (typeof e?.code === 'string' && /^E[A-Z]+$/.test(e.code)) {
    const hint = HINTS[e.code]
    return `GH_SYSTEM: ${e.code}: ${e.message.replace(`${e.code}: `, '')}${hint === undefined ? '' : ` (${hint})`}`
  }
  return `GH_INTERNAL: ${(err as Error)?.message ?? String(err)} (unexpected: run again with --debug and report the stack)`
}

const isUsage = (e: GatehouseError | undefined): boolean => e instanceof ConfigInvalidError || e?.code === 'GH_CONFIG_INVALID' || e?.code === 'GH_USAGE'

function help (): string {
  return `usage: gatehouse <command> [flags]\ncommands:\n${Object.entries(commands).map(([c, cmd]) => `  ${c.padEnd(18)} ${cmd.summary}`).join('\n')}\nRun 'gatehouse <command> --help' for its flags.\n`
}

function unknownCommand (argv: string[]): UsageError {
  const names = Object.keys(commands)
  const given = argv.slice(0, 2).filter(a => !a.startsWith('-'))
  const typed = given.join(' ')
  const groups = [...new Set(names.filter(n => n.includes(' ')).map(n => n.split(' ')[0]!))]
  // "ca" alone, or "ca bogus": list that group's commands.
  if (given[0] !== undefined && groups.includes(given[0])) {
    const sub = names.filter(n => n.startsWith(`${given[0]} `))
    const guess = given[1] === undefined ? undefined : closest(typed, sub)
    return new UsageError(`${given[1] === undefined ? `'${given[0]}' needs a subcommand` : `unknown command "${typed}"`}${guess === undefined ? '' : ` (did you mean "${guess}"?)`}: one of ${sub.join(', ')}; run 'gatehouse --help' for every command`)
  }
  const guess = closest(typed, names) ?? closest(given[0] ?? '', names)
  return new UsageError(`unknown command "${typed || argv[0] || ''}"${guess === undefined ? '' : ` (did you mean "${guess}"?)`}; run 'gatehouse --help' for the list of commands`)
}

function fail (name: string | undefined, err: unknown, debug: boolean): never {
  const e = err instanceof GatehouseError ? err : undefined
  const hint = e === undefined ? undefined : isUsage(e) ? (name === undefined || e.message.includes('--help') ? undefined : `see 'gatehouse ${name} --help'`) : WHAT_TO_DO[e.code]
  const line = e === undefined ? describeOther(err) : `${e.code}: ${oneLine(e.message)}${hint === undefined ? '' : `; ${hint}`}`
  process.stderr.write(`gatehouse${name === undefined ? '' : ` ${name}`}: ${line}\n`)
  if (debug && err instanceof Error && err.stack !== undefined) process.stderr.write(`${err.stack}\n`)
  // Exit now: a start that failed half-way may leave a timer or socket that would keep us alive.
  process.exit(isUsage(e) ? 2 : 1)
}

async function main (args: string[]): Promise<void> {
  // --debug (or GATEHOUSE_DEBUG=1) adds stack traces to errors; it is not a flag of any command.
  const debug = args.includes('--debug') || process.env.GATEHOUSE_DEBUG === '1'
  const argv = args.filter(a => a !== '--debug')
  const name = [argv.slice(0, 2).join(' '), argv[0] ?? ''].find(n => n in commands)
  if (name === undefined) {
    if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
      process.stderr.write(help())
      return
    }
    fail(undefined, unknownCommand(argv), debug)
  }
  const rest = argv.slice(name.split(' ').length)
  const cmd = await loadCommand(name)
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${usage(name, cmd.schema as never)}\n`)
    return
  }
  const shutdown: Array<() => Promise<void>> = []
  const io: CliIo = { out: (t) => { process.stdout.write(t) }, onShutdown: (fn) => { shutdown.push(fn) } }
  try {
    const code = await cmd.run(rest, io)
    if (code !== undefined) { process.exitCode = code; return }
  } catch (err) {
    fail(name, err, debug)
  }
  // A server is running: drain on SIGTERM/SIGINT (what Kubernetes sends), then exit.
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    process.stderr.write(`gatehouse ${name}: ${signal}, draining\n`)
    void Promise.allSettled(shutdown.map(async fn => { await fn() })).then(() => { process.exit(0) })
    setTimeout(() => { process.exit(1) }, 15_000).unref()
  }
  process.on('SIGTERM', () => { stop('SIGTERM') })
  process.on('SIGINT', () => { stop('SIGINT') })
}

await main(process.argv.slice(2))
