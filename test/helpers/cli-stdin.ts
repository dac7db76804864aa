import { spawnSync } from 'node:child_process'
import { cliPath, type CliResult } from './run-cli.ts'

/** Runs `gatehouse <args>` from source with `input` on its standard input. */
export function gatehouseWithInput (args: string[], input: string, env: NodeJS.ProcessEnv = {}): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', input, env: { ...process.env, ...env }, timeout: 30_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}
