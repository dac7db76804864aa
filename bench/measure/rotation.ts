// Rotation under load: the two-hop path with both sidecars holding CA-issued SVIDs of a few seconds,
// at a fixed open-model rate; every failed request counts (the target is 0), next to how many
// certificates each sidecar rotated meanwhile.
import type { BenchEnv } from '../targets/target.ts'
import { startTwoHop } from '../targets/two-hop.ts'
import { runPhase } from './phase.ts'

export interface RotationResult {
  leafTtl: string
  rate: number
  seconds: number
  requests: number
  failed: number
  errorKinds: Record<string, number>
  rotations: { a: number, b: number }
  renewalFailures: number
  p50: number
  p99: number
  p999: number
  max: number
  sendLagP99: number
  otherCorePct: number
  /**
   * The first seconds at the same rate, right after both sidecars became ready: 64 new connections
   * through cold processes. Its failures are counted in `failed`; its latency is reported here, apart
   * from the rotation latency it would otherwise dominate.
   */
  coldStart: { seconds: number, requests: number, failed: number, p99: number, max: number }
  /** `gatehouse proxy` start to /readyz 200, first SVID from the CA included. */
  readyMs: { a: number, b: number }
}

export async function measureRotation (env: BenchEnv, opts: { leafTtl: string, rate: number, seconds: number, warmupSeconds: number }, log: (s: string) => void): Promise<RotationResult> {
  const t = await startTwoHop(env, { kind: 'ca', leafTtl: opts.leafTtl }, 'gatehouse two-hop, rotating')
  try {
    const before = t.rotations()
    log(`  ${opts.rate} req/s for ${opts.warmupSeconds}+${opts.seconds}s through two sidecars rotating ${opts.leafTtl} leaves ...`)
    const r = await runPhase(env.root, { mode: 'open', origin: t.origin, path: t.path, ...(t.headers === undefined ? {} : { headers: t.headers }), rate: opts.rate, connections: 64, seconds: opts.seconds, warmupSeconds: opts.warmupSeconds }, t.procs)
    const after = t.rotations()
    const w = r.load.warmup ?? { seconds: 0, requests: 0, errors: 0, errorKinds: {}, p99: NaN, max: NaN }
    const failed = r.load.errors + w.errors
    log(` ${failed} failed, ${after.a - before.a}+${after.b - before.b} rotations\n`)
    const errorKinds = { ...w.errorKinds }
    for (const [k, v] of Object.entries(r.load.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + v
    return {
      leafTtl: opts.leafTtl,
      rate: opts.rate,
      seconds: opts.seconds,
      requests: r.load.requests + r.load.errors + w.requests + w.errors,
      failed,
      errorKinds,
      coldStart: { seconds: w.seconds, requests: w.requests + w.errors, failed: w.errors, p99: w.p99, max: w.max },
      rotations: { a: after.a - before.a, b: after.b - before.b },
      renewalFailures: after.renewalFailures - before.renewalFailures,
      p50: r.load.p50,
      p99: r.load.p99,
      p999: r.load.p999,
      max: r.load.max,
      sendLagP99: r.load.sendLagP99 ?? NaN,
      otherCorePct: r.otherCorePct,
      readyMs: t.readyMs
    }
  } finally {
    await t.stop()
  }
}
