#!/usr/bin/env node
import { GatehouseError, ConfigInvalidError } from './errors.ts'
import type { CliIo } from './cli/runner.ts'
import { loadCommand } from './cli/commands.ts'
import { commandHelp, commandNamed, groupHelp, groupNamed, topHelp, unknownCommand } from './cli/reference.ts'

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

function fail (name: string | undefined, err: unknown, debug: boolean): never {
  const e = err instanceof GatehouseError ? err : undefined
  const hint = e === undefined ? undefined : isUsage(e) ? (name === undefined || e.message.includes('--help') ? undefined : `see 'gatehouse ${name} --help'`) : WHAT_TO_DO[e.code]
  const line = e === undefined ? describeOther(err) : `${e.code}: ${oneLine(e.message)}${hint === undefined ? '' : `; ${hint}`}`
  process.stderr.write(`gatehouse${name === undefined ? '' : ` ${name}`}: ${line}\n`)
  if (debug && err instanceof Error && err.stack !== undefined) process.stderr.write(`${err.stack}\n`)
  // Exit now: a start that failed half-way may leave a timer or socket that would keep us alive.
  process.exit(isUsage(e) ? 2 : 1)
}

const isHelpFlag = (a: string | undefined): boolean => a === '--help' || a === '-h'

async function main (args: string[]): Promise<void> {
  // --debug (or GATEHOUSE_DEBUG=1) adds stack traces to errors; it is not a flag of any command.
  const debug = args.includes('--debug') || process.env.GATEHOUSE_DEBUG === '1'
  const given = args.filter(a => a !== '--debug')
  const argv = given[0] === '--version' ? ['version', ...given.slice(1)] : given
  if (argv.length === 0 || isHelpFlag(argv[0])) {
    process.stderr.write(topHelp()) // on stderr, where scripts and tests have always read it
    return
  }
  const name = commandNamed(argv)
  if (name === undefined) {
    // A group alone or with --help ("gatehouse ca") lists its commands, as kubectl's groups do.
    const group = groupNamed(argv)
    const after = group === undefined ? [] : argv.slice(group.split(' ').length)
    if (group !== undefined && (after.length === 0 || (after.length === 1 && isHelpFlag(after[0])))) { process.stdout.write(groupHelp(group)); return }
    fail(undefined, unknownCommand(argv), debug)
  }
  const rest = argv.slice(name.split(' ').length)
  const cmd = await loadCommand(name)
  if (rest.some(isHelpFlag)) {
    process.stdout.write(commandHelp(name, cmd))
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
