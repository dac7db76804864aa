// What an idle kept-alive connection costs each HTTP/1.1 target in memory (issue 21: at most 30 KB
// per connection for gatehouse). Per target, one after another, with the targets still warm from
// the load phases: the resident memory of its processes is read (after 1 s of quiet) with no
// connection of ours open; then a load worker pinned to core 0 (load-worker.ts, mode idle) opens
// `idleConnections` keep-alive connections in `idleSteps` equal steps, IDLE_CONCURRENCY (load.ts) at a time, each making one
// GET (200, body read) and then sitting idle; `idleSettleMs` after each step, VmRSS and RssAnon of
// the target's processes are read again from /proc/<pid>/status (summed over them: two-hop's
// connections are all held by sidecar A, the outbound one, B holding only its HTTP/2 link; direct's
// process is the app). "KB per idle connection" is the marginal cost once the process is warm:
// (RSS after the last step - RSS after the first) / (connections open then - connections open after
// the first), so one-off allocations and the garbage of the first handshakes are not counted; the
// same from RssAnon (private memory only); "including warm-up": (RSS last - RSS at 0) / connections.
// Garbage not yet collected at a reading still counts (the targets' GC cannot be forced from here),
// which makes the figures an upper bound for the Node targets.
// Before the first step, with no connection of ours open, the target's idle cost is read over
// IDLE_CPU_MS: CPU (all its processes and threads, /proc/<pid>/task/*/schedstat) and wakeups (voluntary context
// switches of all their threads): what every pod pays with no traffic at all.
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { start, stop, rssMb, anonRssMb, cpuSecondsFine, wakeups } from '../lib/proc.ts'
import type { BenchEnv, Target } from '../targets/target.ts'
import type { LoadSpec, WorkerResult } from '../load-worker.ts'
import { interleave, sum } from './targets.ts'

export interface IdlePlan {
  /** Connections opened per target, in all. */
  idleConnections: number
  idleSteps: number
  /** Quiet time before each reading after a step. */
  idleSettleMs: number
}

export interface IdleResult {
  name: string
  /** At each reading: step 0 (none of ours open), then after each step. */
  steps: Array<{ open: number, rssMb: number, anonRssMb: number }>
  /** Marginal KB per connection between the first and the last step, from VmRSS and from RssAnon. */
  kbPerConnection: number | null
  anonKbPerConnection: number | null
  /** (RSS after the last step - RSS at step 0) / connections open then. */
  kbPerConnectionWithWarmup: number | null
  errors: number
  errorKinds: Record<string, number>
  /** With none of ours open, over IDLE_CPU_MS: CPU as a share of one core, and wakeups per second (all processes and threads). */
  idleCpuPercent: number
  idleWakeupsPerSecond: number
}

/** Quiet time before the step-0 reading: the load phases (or the previous target's connections closing) just ended. */
const ZERO_SETTLE_MS = 1000
/** How long the target's CPU and wakeups are read with no connection of ours open. */
export const IDLE_CPU_MS = 3000
/** A step (opening a few hundred connections) that takes longer than this fails the target, rather than hang the run. */
const STEP_TIMEOUT_MS = 60_000

/** HTTP/1.1 targets only: the gRPC and opaque TCP ones are driven by other load generators. */
export const idleMeasurable = (t: Target): boolean => t.grpc === undefined && !t.name.startsWith('redis')

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const kb = (mb: number): number => mb * 1024

export async function measureIdle (env: BenchEnv, targets: Target[], plan: IdlePlan, log: (s: string) => void): Promise<{ results: IdleResult[], failed: Array<{ name: string, reason: string }> }> {
  const results: IdleResult[] = []
  const failed = new Map<Target, string>()
  await interleave(targets, 1, `idle kept-alive connections (${plan.idleConnections} per target in ${plan.idleSteps} steps)`, async (t) => {
    const r = await idleTarget(env, t, plan)
    results.push(r)
    return `${r.steps.at(-1)!.open} open, ${r.kbPerConnection === null ? 'n/a' : r.kbPerConnection.toFixed(1)} KB each (with none: ${r.idleCpuPercent.toFixed(2)} % of a core, ${r.idleWakeupsPerSecond.toFixed(0)} wakeups/s)`
  }, log, failed)
  return { results, failed: [...failed].map(([t, reason]) => ({ name: t.name, reason: `failed in the idle-connections phase: ${reason}` })) }
}

async function idleTarget (env: BenchEnv, t: Target, plan: IdlePlan): Promise<IdleResult> {
  /** A /proc reading summed over the target's processes. */
  const total = (read: (pid: number) => number): number => sum(t.procs.map(p => read(p.pid)))
  const reading = (open: number): IdleResult['steps'][number] => ({ open, rssMb: total(rssMb), anonRssMb: total(anonRssMb) })
  await sleep(ZERO_SETTLE_MS)
  const cpu0 = total(cpuSecondsFine)
  const woken0 = total(wakeups)
  const t0 = performance.now()
  await sleep(IDLE_CPU_MS)
  const seconds = (performance.now() - t0) / 1000
  const idleCpuPercent = 100 * (total(cpuSecondsFine) - cpu0) / seconds
  const idleWakeupsPerSecond = (total(wakeups) - woken0) / seconds
  const steps = [reading(0)]
  const spec: LoadSpec = {
    mode: 'idle',
    origin: t.origin,
    path: t.path,
    ...(t.headers === undefined ? {} : { headers: t.headers }),
    ...(t.tls ? { tls: { ca: env.pki.bundle, cert: env.pki.client.cert, key: env.pki.client.key } } : {}),
    connections: plan.idleConnections,
    steps: plan.idleSteps,
    seconds: 0,
    warmupSeconds: 0
  }
  const w = start(process.execPath, [join(env.root, 'bench/load-worker.ts'), JSON.stringify(spec)], { core: 0, stdin: 'pipe', stdout: 'pipe', name: 'idle-worker' })
  w.child.stdin!.on('error', () => {}) // a worker that died is reported by next(), not by a write to its stdin
  const lines = createInterface({ input: w.child.stdout! })[Symbol.asyncIterator]()
  const next = async (): Promise<{ event: string, open?: number }> => {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`idle worker: no word for ${STEP_TIMEOUT_MS / 1000} s`)) }, STEP_TIMEOUT_MS) })
    try {
      const line = await Promise.race([lines.next(), late])
      if (line.done === true) throw new Error(`idle worker exited ${String(w.child.exitCode)} before its result:\n${w.stderrTail.join('\n')}`)
      return JSON.parse(line.value) as { event: string, open?: number }
    } finally { clearTimeout(timer) }
  }
  try {
    for (let msg = await next(); ; msg = await next()) {
      if (msg.event === 'idle') {
        await sleep(plan.idleSettleMs)
        steps.push(reading(msg.open ?? NaN))
        w.child.stdin!.write('next\n')
      } else if (msg.event === 'result') {
        const load = msg as unknown as WorkerResult
        await w.exited
        return { name: t.name, steps, ...perConnection(steps), errors: load.errors, errorKinds: load.errorKinds, idleCpuPercent, idleWakeupsPerSecond }
      }
    }
  } finally {
    await stop(w)
  }
}

/** The figures from the readings: marginal between the first and last step, and from step 0. */
function perConnection (steps: IdleResult['steps']): Pick<IdleResult, 'kbPerConnection' | 'anonKbPerConnection' | 'kbPerConnectionWithWarmup'> {
  const zero = steps[0]!
  const first = steps[1]
  const last = steps.at(-1)!
  const per = (dMb: number, n: number | undefined): number | null => n === undefined || !(n > 0) ? null : kb(dMb) / n
  const added = first === undefined || last === first ? undefined : last.open - first.open
  return {
    kbPerConnection: first === undefined ? null : per(last.rssMb - first.rssMb, added),
    anonKbPerConnection: first === undefined ? null : per(last.anonRssMb - first.anonRssMb, added),
    kbPerConnectionWithWarmup: per(last.rssMb - zero.rssMb, last.open - zero.open)
  }
}
