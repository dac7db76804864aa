// One load phase: bench/load-worker.ts as its own process pinned to core 0, with the CPU time of the
// processes under test read from /proc exactly when the measured part starts and ends (the worker
// says when: warm-up and its own start-up are not counted).
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { start, cpuSeconds, coreBusySeconds, type Started } from '../lib/proc.ts'
import type { LoadSpec, WorkerResult } from '../load-worker.ts'

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

export async function runPhase (root: string, spec: LoadSpec, procs: Started[]): Promise<PhaseResult> {
  const worker = start(process.execPath, [join(root, 'bench/load-worker.ts'), JSON.stringify(spec)], { core: 0, stdout: 'pipe', name: 'load-worker' })
  let before: number[] | undefined
  let t0 = 0
  let busy0: number[] = []
  for await (const line of createInterface({ input: worker.child.stdout! })) {
    const msg = JSON.parse(line) as { event: string }
    if (msg.event === 'start') {
      before = procs.map(p => cpuSeconds(p.pid))
      busy0 = coreBusySeconds()
      t0 = performance.now()
    } else if (msg.event === 'result') {
      const wallSeconds = (performance.now() - t0) / 1000
      const cpu = procs.map((p, i) => cpuSeconds(p.pid) - (before?.[i] ?? 0))
      const busy = coreBusySeconds().reduce((a, b, i) => a + b - (busy0[i] ?? 0), 0)
      const load = msg as WorkerResult
      const ours = cpu.reduce((a, b) => a + b, 0) + load.clientCpuSeconds
      await worker.exited
      return { load, cpu, wallSeconds, otherCorePct: Math.max(0, busy - ours) / wallSeconds * 100 }
    }
  }
  await worker.exited
  throw new Error(`load worker (${spec.mode} ${spec.origin}) exited ${String(worker.child.exitCode)} without a result:\n${worker.stderrTail.join('\n')}`)
}
