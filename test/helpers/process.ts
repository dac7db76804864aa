import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import type { Tap } from './mesh.ts'

// Third-party servers (hypercorn, redis, postgres...) and our own CLI as child processes: started,
// awaited until they print that they are ready, and always stopped when the test ends.

export interface Started { proc: ChildProcess, output: () => string, match: RegExpExecArray }

/** True when `cmd` is on the PATH. */
export function hasCommand (cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

/**
 * Spawns `cmd args` and resolves once its stdout or stderr matches `ready` (the match is returned,
 * e.g. a port it chose); rejects if it exits first or `ms` passes. Killed at teardown.
 */
export async function startProcess (t: Tap, cmd: string, args: string[], ready: RegExp, o: { ms?: number, cwd?: string, env?: NodeJS.ProcessEnv } = {}): Promise<Started> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: o.cwd, env: { ...process.env, ...o.env } })
  let out = ''
  const exited = new Promise<void>(resolve => proc.once('exit', () => { resolve() }))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) { proc.kill('SIGKILL'); await exited }
  })
  return await new Promise<Started>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${cmd} did not become ready within ${o.ms ?? 10_000} ms:\n${out}`)) }, o.ms ?? 10_000)
    const check = (chunk: Buffer): void => {
      out += chunk.toString('utf8')
      const m = ready.exec(out)
      if (m !== null) { clearTimeout(timer); resolve({ proc, output: () => out, match: m }) }
    }
    proc.stdout!.on('data', check)
    proc.stderr!.on('data', check)
    proc.once('exit', code => { clearTimeout(timer); reject(new Error(`${cmd} exited (${String(code)}) before it was ready:\n${out}`)) })
    proc.once('error', err => { clearTimeout(timer); reject(err) })
  })
}

/**
 * A test's `skip` option for a third-party tool: false when `cmd` is installed; otherwise a reason
 * naming the Debian package. Under CI (CI=true) a missing tool is an error, not a skip: .ci/run
 * installs every tool a test needs.
 */
export function needsTool (cmd: string, debianPackage: string): string | false {
  if (hasCommand(cmd)) return false
  if (process.env.CI === 'true') throw new Error(`${cmd} is missing under CI: .ci/run must install the Debian package ${debianPackage}`)
  return `${cmd} is not installed (Debian package ${debianPackage}; .ci/run installs it)`
}
