// Child processes of a bench run: started (optionally pinned to one core with taskset), tracked so
// that every one is killed when the run ends however it ends, and read from /proc (CPU, RSS).
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { availableParallelism } from 'node:os'
import { createInterface } from 'node:readline'

const children = new Set<ChildProcess>()

/** Sends SIGKILL to every child still running (synchronous: safe in an 'exit' handler). */
export function killAll (): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  children.clear()
}

/** Whether children can be pinned to cores 0 and 1, and if not, why. */
export function pinning (): { ok: true } | { ok: false, reason: string } {
  if (availableParallelism() < 2) return { ok: false, reason: `only ${availableParallelism()} CPU available to this process` }
  try { execFileSync('taskset', ['-c', '1', 'true'], { stdio: 'ignore' }) } catch (err) {
    return { ok: false, reason: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'taskset is not installed (util-linux)' : `taskset failed: ${(err as Error).message}` }
  }
  return { ok: true }
}
let pinnable: boolean | undefined

export interface Started { child: ChildProcess, pid: number, stderrTail: string[], events: Map<string, number>, exited: Promise<void> }

/**
 * Starts `cmd args` on `core` (via `taskset -c core`, which execs: the pid is the command's own).
 * stderr is always read (a full pipe would stall the child); JSON lines with an `event` field are counted.
 * `stdin: 'pipe'` for a child that waits for the parent's word (the idle load worker).
 */
export function start (cmd: string, args: string[], opts: { core?: 0 | 1, stdin?: 'pipe' | 'ignore', stdout?: 'pipe' | 'ignore', env?: NodeJS.ProcessEnv, name: string }): Started {
  pinnable ??= pinning().ok
  const [file, argv] = opts.core !== undefined && pinnable ? ['taskset', ['-c', String(opts.core), cmd, ...args]] : [cmd, args]
  const spawnOpts: SpawnOptions = { stdio: [opts.stdin ?? 'ignore', opts.stdout ?? 'ignore', 'pipe'], env: opts.env ?? process.env }
  const child = spawn(file, argv as string[], spawnOpts)
  children.add(child)
  const stderrTail: string[] = []
  const events = new Map<string, number>()
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderrTail.push(line)
    if (stderrTail.length > 40) stderrTail.shift()
    if (line.startsWith('{')) {
      try {
        const ev = (JSON.parse(line) as { event?: unknown }).event
        if (typeof ev === 'string') events.set(ev, (events.get(ev) ?? 0) + 1)
      } catch { /* not JSON after all */ }
    }
  })
  const exited = new Promise<void>(resolve => { child.once('exit', () => { children.delete(child); resolve() }) })
  if (child.pid === undefined) throw new Error(`${opts.name}: could not start ${file}`)
  return { child, pid: child.pid, stderrTail, events, exited }
}

/** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
export async function stop (p: Started, graceMs = 3000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return
  p.child.kill('SIGTERM')
  const timer = setTimeout(() => { p.child.kill('SIGKILL') }, graceMs)
  await p.exited
  clearTimeout(timer)
}

/** The first stdout line of a child, parsed as JSON (bench/app.ts and bench/node-reference.ts print their port). */
export async function firstJsonLine<T> (p: Started, name: string): Promise<T> {
  for await (const line of createInterface({ input: p.child.stdout! })) return JSON.parse(line) as T
  throw new Error(`${name} exited before printing its port:\n${p.stderrTail.join('\n')}`)
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer().once('error', reject).listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port
      s.close(() => { resolve(p) })
    })
  })
}

export async function waitForTcp (port: number, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const ok = await new Promise<boolean>(resolve => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true) }).once('error', () => { resolve(false) })
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`${what}: nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

let ticks: number | undefined
function clockTicks (): number {
  if (ticks === undefined) {
    try { ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100 } catch { ticks = 100 }
  }
  return ticks
}

/** CPU seconds (user + system, all threads) a process has used so far. */
export function cpuSeconds (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / clockTicks()
}

/** CPU seconds (user + system) used so far by a process's children that have exited and been waited for (cutime + cstime). */
export function childrenCpuSeconds (pid: number | 'self'): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ')
  return (Number(fields[13]) + Number(fields[14])) / clockTicks()
}

/** Per thread of a process, from /proc/<pid>/task: a field summed over its threads (one that exits meanwhile is left out). */
function sumOverThreads (pid: number, read: (tid: string) => number): number {
  let total = 0
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try { total += read(tid) } catch { /* the thread exited between the listing and the read */ }
  }
  return total
}

/** Voluntary context switches of all a process's threads so far: how often one went to sleep (and so was woken). */
export function wakeups (pid: number): number {
  return sumOverThreads(pid, tid => Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1] ?? 0))
}

/** CPU seconds of all a process's threads so far, to the nanosecond (schedstat; /proc/<pid>/stat counts in clock ticks of 10 ms, too coarse for an idle process). */
export function cpuSecondsFine (pid: number): number {
  return sumOverThreads(pid, tid => Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0])) / 1e9
}

function statusKb (pid: number, field: 'VmHWM' | 'VmRSS' | 'RssAnon'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Number(m[1])
}

/** Peak resident set (VmHWM) in MiB since the process started or since resetPeakRss. */
export function peakRssMb (pid: number): number { return statusKb(pid, 'VmHWM') / 1024 }
export function rssMb (pid: number): number { return statusKb(pid, 'VmRSS') / 1024 }
/** Private (anonymous) resident memory now: RSS without the file-backed pages of the Node binary and libraries. */
export function anonRssMb (pid: number): number { return statusKb(pid, 'RssAnon') / 1024 }

/** Resets VmHWM to the current RSS (clear_refs 5), so the next peak is the one under load. */
export function resetPeakRss (pid: number): boolean {
  try { writeFileSync(`/proc/${pid}/clear_refs`, '5'); return true } catch { return false }
}

/** Busy CPU seconds per core so far, from /proc/stat (user+nice+system+irq+softirq+steal). */
export function coreBusySeconds (): number[] {
  const out: number[] = []
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line)
    if (m === null) continue
    const f = m[2]!.trim().split(/\s+/).map(Number)
    out[Number(m[1])] = ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0)) / clockTicks()
  }
  return out
}
