// Every per-target figure, under the same load generator: keep-alive throughput at saturation and
// CPU per 10k requests; latency percentiles at a fixed open-model rate; new connections (full mTLS
// handshakes) per second; peak RSS of the processes under test while all of that ran.
// Each phase is cut into `rounds` slices per target, interleaved across the targets (the order
// rotating each round), so a burst of outside load on this shared machine lands on all of them
// alike instead of on whichever target happened to be running. Rates are the median over the
// rounds; latency percentiles are those of all samples of all rounds (merged histograms).
// gRPC targets go through the same phases (but for handshakes) with unary calls instead of GETs:
// `grpcConnections` HTTP/2 connections, `grpcStreams` calls in flight on each in the closed loop.
import type { BenchEnv, Target } from '../targets/target.ts'
import type { LoadSpec } from '../load-worker.ts'
import type { GrpcLoadSpec } from '../grpc-load-worker.ts'
import { runPhase, type PhaseResult, type Worker } from './phase.ts'
import { peakRssMb, resetPeakRss, anonRssMb } from '../lib/proc.ts'
import { merge, percentile, type Histogram } from '../lib/histogram.ts'

export interface Plan {
  /** Slices per phase and target, interleaved across targets. */
  rounds: number
  /** Warm-up of each keep-alive and handshake slice (its own connections). */
  warmupSeconds: number
  /** Totals per target, over all rounds: */
  throughputSeconds: number
  latencySeconds: number
  handshakeSeconds: number
  connections: number
  latencyWarmupSeconds: number
  rate: number
  handshakeConnections: number
  /** gRPC targets: HTTP/2 connections (closed loop and fixed rate), and calls in flight per connection in the closed loop. */
  grpcConnections: number
  grpcStreams: number
}

export interface TargetResult {
  name: string
  /** What it was sent: HTTP/1.1 GETs, or gRPC unary calls (then "requests" are calls). */
  protocol: 'http/1.1' | 'grpc'
  /** undici (load-worker.ts), node:http2 (grpc-load-worker.ts) or h2load. */
  loadGenerator: 'undici' | 'node:http2' | 'h2load'
  description: string
  notes: string[]
  throughput: {
    /** Median over the rounds. */
    rps: number
    requests: number
    errors: number
    errorKinds: Record<string, number>
    p50: number
    p99: number
    /** CPU seconds the processes under test used per 10,000 requests (median over the rounds). */
    cpuSecondsPer10k: number
    /** 10,000 / cpuSecondsPer10k: requests one core of the proxy alone could serve per second. */
    rpsPerProxyCore: number
    /** CPU seconds per 10,000 requests of each process under test (two-hop: A, then B), over all rounds. */
    cpuSecondsPer10kEach: number[]
    appCpuSecondsPer10k: number
    proxyCorePct: number
    appCorePct: number
    clientCorePct: number
    otherCorePct: number
    perRound: Array<{ rps: number, cpuSecondsPer10k: number }>
  }
  latency: {
    rate: number
    requests: number
    errors: number
    errorKinds: Record<string, number>
    p50: number
    p90: number
    p99: number
    p999: number
    max: number
    /** The load generator's own lateness in sending (ms, p99): the noise floor of these figures. */
    sendLagP99: number
    proxyCorePctAtRate: number
    otherCorePct: number
    perRoundP99: number[]
  }
  handshakes?: {
    kind: 'mtls' | 'tcp'
    /** Median over the rounds. */
    perSecond: number
    errors: number
    errorKinds: Record<string, number>
    proxyCpuMsPerConnection: number
    proxyCorePct: number
    clientCorePct: number
    otherCorePct: number
    perRound: number[]
  }
  peakRssMb: number
  peakRssMbEach: number[]
  /** RssAnon after the load phases (the larger process, for two processes). */
  anonRssMbAtEnd: number
  inspect?: Record<string, unknown>
}

export const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const addKinds = (rs: PhaseResult[]): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const r of rs) for (const [k, v] of Object.entries(r.load.errorKinds)) out[k] = (out[k] ?? 0) + v
  return out
}

/**
 * Runs `slice` once per target in each of `rounds` rounds, the order rotating every round, so a burst
 * of outside load lands on all targets alike; a target whose slice throws is left out from then on
 * (`failed`: why). `slice` returns what to log beside the target's name, or undefined to skip it.
 */
export async function interleave<T extends { name: string }> (targets: T[], rounds: number, what: string, slice: (t: T) => Promise<string | undefined>, log: (s: string) => void, failed: Map<T, string>): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    log(`${what}, round ${round + 1}/${rounds}:`)
    for (let i = 0; i < targets.length; i++) {
      const t = targets[(i + round) % targets.length]!
      if (failed.has(t)) continue
      try {
        const shown = await slice(t)
        if (shown !== undefined) log(` ${t.name} ${shown};`)
      } catch (err) {
        failed.set(t, (err as Error).message)
        log(` ${t.name} FAILED;`)
      }
    }
    log('\n')
  }
}

type Phase = 'throughput' | 'latency' | 'handshakes'

interface Slices { thr: PhaseResult[], lat: PhaseResult[], hs: PhaseResult[] }

export async function measureTargets (env: BenchEnv, targets: Target[], plan: Plan, log: (s: string) => void): Promise<{ results: TargetResult[], failed: Array<{ name: string, reason: string }> }> {
  const slices = new Map<Target, Slices>(targets.map(t => [t, { thr: [], lat: [], hs: [] }]))
  const failed = new Map<Target, string>()
  const appOf = (t: Target): Target['procs'][number] => t.app ?? env.app
  const watched = (t: Target): Target['procs'] => t.procs.includes(appOf(t)) ? t.procs : [...t.procs, appOf(t)]
  const tls = (t: Target): { tls?: LoadSpec['tls'] } => t.tls ? { tls: { ca: env.pki.bundle, cert: env.pki.client.cert, key: env.pki.client.key } } : {}
  const workerOf = (t: Target): Worker => t.grpc === undefined ? 'bench/load-worker.ts' : t.grpc.driver === 'h2load' ? 'bench/h2load-worker.ts' : 'bench/grpc-load-worker.ts'
  const spec = (t: Target, phase: Phase): LoadSpec | GrpcLoadSpec => {
    if (t.grpc !== undefined) {
      const g = { origin: t.origin, authority: t.grpc.authority, ...(t.grpc.tunnel === undefined ? {} : { tunnel: t.grpc.tunnel }), ...tls(t), connections: plan.grpcConnections, streams: plan.grpcStreams }
      if (phase === 'throughput') return { ...g, mode: 'closed', seconds: plan.throughputSeconds / plan.rounds, warmupSeconds: plan.warmupSeconds }
      return { ...g, mode: 'open', rate: plan.rate, seconds: plan.latencySeconds / plan.rounds, warmupSeconds: plan.latencyWarmupSeconds }
    }
    const base = {
      origin: t.origin,
      path: t.path,
      ...(t.headers === undefined ? {} : { headers: t.headers }),
      ...tls(t)
    }
    if (phase === 'throughput') return { ...base, mode: 'closed', connections: plan.connections, seconds: plan.throughputSeconds / plan.rounds, warmupSeconds: plan.warmupSeconds }
    if (phase === 'latency') return { ...base, mode: 'open', rate: plan.rate, connections: plan.connections, seconds: plan.latencySeconds / plan.rounds, warmupSeconds: plan.latencyWarmupSeconds }
    return { ...base, mode: 'handshake', connections: plan.handshakeConnections, seconds: plan.handshakeSeconds / plan.rounds, warmupSeconds: Math.min(0.5, plan.warmupSeconds) }
  }
  const show = (phase: Phase, r: PhaseResult): string => phase === 'latency' ? `p99 ${r.load.p99.toFixed(2)} ms` : `${r.load.rps.toFixed(0)}/s`

  for (const t of targets) for (const p of t.procs) resetPeakRss(p.pid)
  for (const phase of ['throughput', 'latency', 'handshakes'] as const) {
    const what = phase === 'throughput' ? `keep-alive throughput (${plan.connections} connections)` : phase === 'latency' ? `latency at ${plan.rate} req/s (open model)` : 'new connections per second (one per request)'
    await interleave(targets, plan.rounds, what, async (t) => {
      if (phase === 'handshakes' && t.handshakes === 'none') return undefined
      const r = await runPhase(env.root, spec(t, phase), watched(t), workerOf(t))
      slices.get(t)![phase === 'throughput' ? 'thr' : phase === 'latency' ? 'lat' : 'hs'].push(r)
      return show(phase, r)
    }, log, failed)
  }

  const results: TargetResult[] = []
  for (const t of targets) {
    if (failed.has(t)) continue
    const { thr, lat, hs } = slices.get(t)!
    const nProxy = t.procs.length
    const appIsTarget = t.procs.includes(appOf(t))
    const proxyCpu = (r: PhaseResult): number => sum(r.cpu.slice(0, nProxy))
    const appCpu = (r: PhaseResult): number => appIsTarget ? 0 : r.cpu.at(-1)!
    const wall = (rs: PhaseResult[]): number => sum(rs.map(r => r.wallSeconds))
    const perRound = thr.map(r => ({ rps: r.load.rps, cpuSecondsPer10k: proxyCpu(r) / Math.max(1, r.load.requests) * 10_000 }))
    const cpu10k = median(perRound.map(r => r.cpuSecondsPer10k))
    const thrHist: Histogram = merge(thr.map(r => r.load.histogram))
    const latHist: Histogram = merge(lat.map(r => r.load.histogram))
    const lagHist: Histogram = merge(lat.map(r => r.load.sendLagHistogram ?? {}))
    const rss = t.procs.map(p => peakRssMb(p.pid))
    const inspect = t.inspect === undefined ? undefined : await t.inspect()
    results.push({
      name: t.name,
      protocol: t.grpc === undefined ? 'http/1.1' : 'grpc',
      loadGenerator: t.grpc === undefined ? 'undici' : t.grpc.driver === 'h2load' ? 'h2load' : 'node:http2',
      description: t.description,
      notes: t.notes,
      throughput: {
        rps: median(thr.map(r => r.load.rps)),
        requests: sum(thr.map(r => r.load.requests)),
        errors: sum(thr.map(r => r.load.errors)),
        errorKinds: addKinds(thr),
        p50: percentile(thrHist, 0.5),
        p99: percentile(thrHist, 0.99),
        cpuSecondsPer10k: cpu10k,
        rpsPerProxyCore: cpu10k > 0 ? 10_000 / cpu10k : NaN,
        cpuSecondsPer10kEach: t.procs.map((_, i) => sum(thr.map(r => r.cpu[i] ?? 0)) / Math.max(1, sum(thr.map(r => r.load.requests))) * 10_000),
        appCpuSecondsPer10k: sum(thr.map(appCpu)) / Math.max(1, sum(thr.map(r => r.load.requests))) * 10_000,
        proxyCorePct: sum(thr.map(proxyCpu)) / wall(thr) * 100,
        appCorePct: sum(thr.map(appCpu)) / wall(thr) * 100,
        clientCorePct: sum(thr.map(r => r.load.clientCpuSeconds)) / wall(thr) * 100,
        otherCorePct: sum(thr.map(r => r.otherCorePct * r.wallSeconds)) / wall(thr),
        perRound
      },
      latency: {
        rate: plan.rate,
        requests: sum(lat.map(r => r.load.requests)),
        errors: sum(lat.map(r => r.load.errors)),
        errorKinds: addKinds(lat),
        p50: percentile(latHist, 0.5),
        p90: percentile(latHist, 0.9),
        p99: percentile(latHist, 0.99),
        p999: percentile(latHist, 0.999),
        max: Math.max(...lat.map(r => r.load.max)),
        sendLagP99: percentile(lagHist, 0.99),
        proxyCorePctAtRate: sum(lat.map(proxyCpu)) / wall(lat) * 100,
        otherCorePct: sum(lat.map(r => r.otherCorePct * r.wallSeconds)) / wall(lat),
        perRoundP99: lat.map(r => r.load.p99)
      },
      ...(t.handshakes === 'none' || hs.length === 0
        ? {}
        : {
            handshakes: {
              kind: t.handshakes,
              perSecond: median(hs.map(r => r.load.rps)),
              errors: sum(hs.map(r => r.load.errors)),
              errorKinds: addKinds(hs),
              proxyCpuMsPerConnection: sum(hs.map(proxyCpu)) / Math.max(1, sum(hs.map(r => r.load.requests))) * 1000,
              proxyCorePct: sum(hs.map(proxyCpu)) / wall(hs) * 100,
              clientCorePct: sum(hs.map(r => r.load.clientCpuSeconds)) / wall(hs) * 100,
              otherCorePct: sum(hs.map(r => r.otherCorePct * r.wallSeconds)) / wall(hs),
              perRound: hs.map(r => r.load.rps)
            }
          }),
      peakRssMb: Math.max(...rss),
      peakRssMbEach: rss,
      anonRssMbAtEnd: Math.max(...t.procs.map(p => anonRssMb(p.pid))),
      ...(inspect === undefined ? {} : { inspect })
    })
  }
  return { results, failed: [...failed].map(([t, reason]) => ({ name: t.name, reason: `failed while measured: ${reason}` })) }
}
