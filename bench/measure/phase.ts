// One load phase: a load worker (bench/load-worker.ts by default; grpc-load-worker.ts or
// h2load-worker.ts for the gRPC targets) as its own process pinned to core 0, with the CPU time of
// the processes under test read from /proc exactly when the measured part starts and ends (the
// worker says when: warm-up and its own start-up are not counted; a worker that says "end" before
// it works out its result is measured up to then).
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { start, cpuSeconds, coreBusySeconds, type Started } from '../lib/proc.ts'
import type { LoadSpec, WorkerResult } from '../load-worker.ts'
import type { GrpcLoadSpec } from '../grpc-load-worker.ts'

export interface PhaseResult {
  load: WorkerResult
  /** CPU seconds used during the measured part by each process under test, in order. */
  cpu: number[]
  wallSeconds: number
  /**
   * CPU the rest of the machine used meanwhile (busy time of all cores minus the processes under
   * test and the load generator), as a share of one core: anything well above 0 means the figures
   * were taken on a busy machine.
   */
  otherCorePct: number
}

export type Worker = 'bench/load-worker.ts' | 'bench/grpc-load-worker.ts' | 'bench/h2load-worker.ts'

export async function runPhase (root: string, spec: LoadSpec | GrpcLoadSpec, procs: Started[], worker: Worker = 'bench/load-worker.ts'): Promise<PhaseResult> {
  const w = start(process.execPath, [join(root, worker), JSON.stringify(spec)], { core: 0, stdout: 'pipe', name: 'load-worker' })
  let before: number[] | undefined
  let t0 = 0
  let busy0: number[] = []
  let ended: { cpu: number[], busy: number[], at: number } | undefined
  const snapshot = (): { cpu: number[], busy: number[], at: number } => ({ cpu: procs.map(p => cpuSeconds(p.pid)), busy: coreBusySeconds(), at: performance.now() })
  for await (const line of createInterface({ input: w.child.stdout! })) {
    const msg = JSON.parse(line) as { event: string }
    if (msg.event === 'start') {
      before = procs.map(p => cpuSeconds(p.pid))
      busy0 = coreBusySeconds()
      t0 = performance.now()
    } else if (msg.event === 'end') {
      ended = snapshot()
    } else if (msg.event === 'result') {
      const end = ended ?? snapshot()
      const wallSeconds = (end.at - t0) / 1000
      const cpu = end.cpu.map((c, i) => c - (before?.[i] ?? 0))
      const busy = end.busy.reduce((a, b, i) => a + b - (busy0[i] ?? 0), 0)
      const load = msg as WorkerResult
      const ours = cpu.reduce((a, b) => a + b, 0) + load.clientCpuSeconds
      await w.exited
      return { load, cpu, wallSeconds, otherCorePct: Math.max(0, busy - ours) / wallSeconds * 100 }
    }
  }
  await w.exited
  throw new Error(`${worker} (${spec.mode} ${spec.origin}) exited ${String(w.child.exitCode)} without a result:\n${w.stderrTail.join('\n')}`)
}
