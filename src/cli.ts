#!/usr/bin/env node
import { GatehouseError, ConfigInvalidError } from './errors.ts'
import { usage } from './config.ts'
import type { CliIo } from './cli/runner.ts'
import { commands } from './cli/commands.ts'

// Entry point: picks the subcommand, runs it, and turns errors into "gatehouse: CODE: message" on
// stderr with exit status 2 (configuration) or 1 (anything else). This file and src/cli/ are the only
// places that write to stdout/stderr directly: everything else logs through pino.

const HINTS: Record<string, string> = {
  EADDRINUSE: 'another process is listening there: stop it or choose another address',
  EACCES: 'permission denied: check the file mode, or use a port above 1023',
  ENOENT: 'no such file or directory: check the path',
  EADDRNOTAVAIL: 'that address is not on this machine',
  ECONNREFUSED: 'nothing is listening there'
}

/** One line for an error from the system (a port in use, a missing file): what failed and what to do. */
function describeSystemError (err: unknown): string {
  const e = err as NodeJS.ErrnoException
  if (typeof e?.code === 'string') {
    const hint = HINTS[e.code]
    return `${e.code}: ${e.message.replace(`${e.code}: `, '')}${hint === undefined ? '' : ` (${hint})`}`
  }
  return `${(err as Error)?.message ?? String(err)} (run with --debug for details)`
}

function help (): string {
  return `usage: gatehouse <command> [flags]\ncommands:\n${Object.entries(commands).map(([c, cmd]) => `  ${c.padEnd(18)} ${cmd.summary}`).join('\n')}\nRun 'gatehouse <command> --help' for its flags.\n`
}

async function main (argv: string[]): Promise<void> {
  const name = [argv.slice(0, 2).join(' '), argv[0] ?? ''].find(n => n in commands)
  if (name === undefined) {
    process.stderr.write(help())
    process.exitCode = argv.length === 0 || argv[0] === '--help' || argv[0] === 'help' ? 0 : 2
    return
  }
  // --debug (or GATEHOUSE_DEBUG=1) adds stack traces to errors; it is not a flag of any command.
  const debug = argv.includes('--debug') || process.env.GATEHOUSE_DEBUG === '1'
  const rest = argv.slice(name.split(' ').length).filter(a => a !== '--debug')
  const cmd = commands[name]!
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
    const e = err instanceof GatehouseError ? err : undefined
    process.stderr.write(`gatehouse ${name}: ${e === undefined ? describeSystemError(err) : `${e.code}: ${e.message}`}\n`)
    if (debug && err instanceof Error && err.stack !== undefined) process.stderr.write(`${err.stack}\n`)
    // Exit now: a start that failed half-way may leave a timer or socket that would keep us alive.
    process.exit(err instanceof ConfigInvalidError || e?.code === 'GH_CONFIG_INVALID' ? 2 : 1)
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
