import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const cliPath = fileURLToPath(new URL('../../src/cli.ts', import.meta.url))

export interface CliResult { status: number | null, stdout: string, stderr: string }

/** Runs `gatehouse <args>` from source on the same Node 24 that runs the tests. */
export function gatehouse (args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}
