// The shape of bench/results/latest.json, and the ratios issues 8, 14 and 17 set goals for, computed from it.
import type { TargetResult, Plan } from '../measure/targets.ts'
import type { RotationResult } from '../measure/rotation.ts'
import type { MicroResult } from '../micro-worker.ts'
import type { RedisPlan, RedisResult } from '../lib/redis.ts'
import type { AuditSiemResult } from '../measure/audit.ts'
import type { EvidenceResult } from '../measure/evidence.ts'
import type { IdlePlan, IdleResult } from '../measure/idle.ts'

export interface BenchResults {
  date: string
  mode: 'quick' | 'full'
  durationSeconds: number
  machine: { cpu: string, cores: number, node: string, nginx: string | null, kernel: string, pinning: string, loadAverageAtStart: number, gatehouse: string }
  plan: Plan & IdlePlan & { rotationSeconds: number, rotationWarmupSeconds: number, rotationRate: number, leafTtl: string, bodyBytes: number, policyRules: number, redis: RedisPlan }
  targets: TargetResult[]
  /** Memory per idle kept-alive connection of each HTTP/1.1 target (issue 21); `failed`: targets that failed that phase. */
  idle: { results: IdleResult[], failed: Array<{ name: string, reason: string }> } | { skipped: string }
  /** Opaque TCP: redis-benchmark against redis, direct and through two tunnels (issue 17). */
  redis: RedisResult[]
  skipped: Array<{ name: string, reason: string }>
  rotation: RotationResult | { skipped: string }
  micro: MicroResult | { skipped: string }
  /** `gatehouse audit verify` over many sidecars' chains merged into one file (issue 15). */
  auditVerify: AuditSiemResult | { skipped: string }
  /** The least-privilege tools on the same kind of log (issue 19). */
  evidence?: EvidenceResult | { skipped: string }
  ratios: Ratio[]
}

export interface Ratio {
  what: string
  value: number | null
  unit: 'x' | 'ms' | 'MB' | 'KB' | '%' | 'requests' | 'lines/s'
  goal: string
  /** null: not measured (a target was skipped) or informational. */
  pass: boolean | null
  /** A figure it rests on was taken while other processes used a good part of the machine. */
  noisy: boolean
}

/** Outside load above this share of one core during a phase, or a send lag above 1 ms, marks its figures as noisy. */
export const NOISY_OTHER_PCT = 25
const noisyThr = (t: TargetResult | undefined): boolean => t !== undefined && t.throughput.otherCorePct > NOISY_OTHER_PCT
const noisyLat = (t: TargetResult | undefined): boolean => t !== undefined && (t.latency.otherCorePct > NOISY_OTHER_PCT || t.latency.sendLagP99 > 1)
const noisyHs = (t: TargetResult | undefined): boolean => t?.handshakes !== undefined && t.handshakes.otherCorePct > NOISY_OTHER_PCT

export function computeRatios (targets: TargetResult[], rotation: BenchResults['rotation'], redis: RedisResult[] = [], auditVerify: BenchResults['auditVerify'] = { skipped: 'not run' }, evidence: BenchResults['evidence'] = { skipped: 'not run' }, idle: BenchResults['idle'] = { skipped: 'not run' }): Ratio[] {
  const t = (name: string): TargetResult | undefined => targets.find(x => x.name === name)
  const gh = t('gatehouse')
  const ref = t('node-reference')
  const ngx = t('nginx')
  const direct = t('direct')
  const hop = t('gatehouse two-hop')
  const div = (a: number | undefined, b: number | undefined): number | null => a === undefined || b === undefined || !(b > 0) ? null : a / b
  const sub = (a: number | undefined, b: number | undefined): number | null => a === undefined || b === undefined ? null : a - b
  const atLeast = (v: number | null, goal: number): boolean | null => v === null ? null : v >= goal
  const atMost = (v: number | null, goal: number): boolean | null => v === null ? null : v <= goal
  const out: Ratio[] = []
  const push = (what: string, value: number | null, unit: Ratio['unit'], goal: string, pass: boolean | null, noisy = false): void => { out.push({ what, value, unit, goal, pass, noisy }) }
  let v = div(gh?.throughput.rps, ref?.throughput.rps)
  push('gatehouse / node-reference, keep-alive req/s', v, 'x', '>= 0.9', atLeast(v, 0.9), noisyThr(gh) || noisyThr(ref))
  v = div(gh?.throughput.rps, ngx?.throughput.rps)
  push('gatehouse / nginx, keep-alive req/s', v, 'x', '>= 0.5', atLeast(v, 0.5), noisyThr(gh) || noisyThr(ngx))
  v = div(gh?.throughput.rpsPerProxyCore, ref?.throughput.rpsPerProxyCore)
  push('gatehouse / node-reference, req/s per proxy core (from CPU per request)', v, 'x', '(>= 0.9)', null, noisyThr(gh) || noisyThr(ref))
  v = div(gh?.throughput.rpsPerProxyCore, ngx?.throughput.rpsPerProxyCore)
  push('gatehouse / nginx, req/s per proxy core (from CPU per request)', v, 'x', '(>= 0.5)', null, noisyThr(gh) || noisyThr(ngx))
  v = sub(gh?.latency.p99, direct?.latency.p99)
  push('gatehouse added p99 over direct at the fixed rate', v, 'ms', '<= 1 ms', atMost(v, 1), noisyLat(gh) || noisyLat(direct))
  v = sub(hop?.latency.p99, direct?.latency.p99)
  push('two-hop added p99 over direct at the fixed rate', v, 'ms', '<= 2 ms', atMost(v, 2), noisyLat(hop) || noisyLat(direct))
  v = div(gh?.handshakes?.perSecond, ref?.handshakes?.perSecond)
  push('gatehouse / node-reference, new mTLS handshakes/s', v, 'x', '>= 0.9', atLeast(v, 0.9), noisyHs(gh) || noisyHs(ref))
  v = div(ref?.handshakes?.proxyCpuMsPerConnection, gh?.handshakes?.proxyCpuMsPerConnection)
  push('gatehouse / node-reference, handshakes per proxy core (from CPU per connection)', v, 'x', '(>= 0.9)', null, noisyHs(gh) || noisyHs(ref))
  v = gh?.peakRssMb ?? null
  push('gatehouse peak RSS under load', v, 'MB', '<= 80 MB', atMost(v, 80))
  v = hop?.peakRssMb ?? null
  push('two-hop: larger sidecar peak RSS under load', v, 'MB', '<= 80 MB', atMost(v, 80))
  v = 'failed' in rotation ? rotation.failed : null
  push('failed requests across certificate rotations', v, 'requests', '0', v === null ? null : v === 0)

  // Issue 14 (HTTP/2 between sidecars, gRPC): the second hop may at most double the added p99 of one
  // sidecar, the cold start of two sidecars stays under 200 ms at p99. gRPC: the same, for calls.
  const gGh = t('grpc gatehouse')
  const gHop = t('grpc two-hop')
  const gDirect = t('grpc direct')
  const gNgx = t('grpc nginx')
  v = sub(gh?.latency.p99, direct?.latency.p99)
  const w = sub(hop?.latency.p99, direct?.latency.p99)
  push('two-hop added p99 / gatehouse added p99 (each over direct, fixed rate)', v === null || w === null ? null : div(w, v), 'x', '<= 2 (issue 14)', v === null || w === null || !(v > 0) ? null : w <= 2 * v, noisyLat(hop) || noisyLat(gh) || noisyLat(direct))
  v = 'coldStart' in rotation ? rotation.coldStart.p99 : null
  push('rotation run: cold-start p99 (two sidecars, first seconds at the rate)', v, 'ms', '< 200 ms (issue 14)', v === null ? null : v < 200, 'otherCorePct' in rotation && rotation.otherCorePct > NOISY_OTHER_PCT)
  v = sub(gGh?.latency.p99, gDirect?.latency.p99)
  push('grpc gatehouse added p99 over grpc direct at the fixed rate', v, 'ms', '', null, noisyLat(gGh) || noisyLat(gDirect))
  const gw = sub(gHop?.latency.p99, gDirect?.latency.p99)
  push('grpc two-hop added p99 over grpc direct at the fixed rate', gw, 'ms', '', null, noisyLat(gHop) || noisyLat(gDirect))
  push('grpc two-hop added p99 / grpc gatehouse added p99', v === null || gw === null ? null : div(gw, v), 'x', '<= 2 (issue 14)', v === null || gw === null || !(v > 0) ? null : gw <= 2 * v, noisyLat(gHop) || noisyLat(gGh) || noisyLat(gDirect))
  v = div(gGh?.throughput.rpsPerProxyCore, gNgx?.throughput.rpsPerProxyCore)
  push('grpc gatehouse / grpc nginx, calls per proxy core (from CPU per call)', v, 'x', '', null, noisyThr(gGh) || noisyThr(gNgx))
  v = div(gHop?.throughput.cpuSecondsPer10k, gGh?.throughput.cpuSecondsPer10k)
  push('grpc two-hop / grpc gatehouse, CPU per call (both sidecars / one)', v, 'x', '', null, noisyThr(gHop) || noisyThr(gGh))
  v = div(hop?.throughput.cpuSecondsPer10k, gh?.throughput.cpuSecondsPer10k)
  push('two-hop / gatehouse, CPU per request (both sidecars / one)', v, 'x', '', null, noisyThr(hop) || noisyThr(gh))

  // Issue 17 (opaque TCP): two sidecars carrying redis cost at most 1.5x the CPU per command of two stunnels.
  const r = (name: string): RedisResult | undefined => redis.find(x => x.name === name)
  const rGh = r('redis gatehouse two-hop')
  const rSt = r('redis stunnel')
  const rDirect = r('redis direct')
  const noisyRedis = (x: RedisResult | undefined): boolean => x !== undefined && x.throughput.otherCorePct > NOISY_OTHER_PCT
  const noisyOne = (x: RedisResult | undefined): boolean => x !== undefined && x.oneConnection.otherCorePct > NOISY_OTHER_PCT
  v = div(rGh?.throughput.cpuSecondsPer10k, rSt?.throughput.cpuSecondsPer10k)
  push('redis gatehouse two-hop / redis stunnel, CPU per command (both tunnels of each)', v, 'x', '<= 1.5 (issue 17)', atMost(v, 1.5), noisyRedis(rGh) || noisyRedis(rSt))
  v = div(rGh?.throughput.commandsPerSecond, rSt?.throughput.commandsPerSecond)
  push('redis gatehouse two-hop / redis stunnel, commands/s (50 connections)', v, 'x', '', null, noisyRedis(rGh) || noisyRedis(rSt))
  v = sub(rGh?.oneConnection.p99, rDirect?.oneConnection.p99)
  const st = sub(rSt?.oneConnection.p99, rDirect?.oneConnection.p99)
  push('redis gatehouse two-hop added p99 over redis direct (one connection)', v, 'ms', '', null, noisyOne(rGh) || noisyOne(rDirect))
  push('redis stunnel added p99 over redis direct (one connection)', st, 'ms', '', null, noisyOne(rSt) || noisyOne(rDirect))

  // Issue 15: `gatehouse audit verify` on a SIEM export (5M lines from 50 chains) above 150k lines/s, under 150 MB.
  const av = 'runs' in auditVerify ? auditVerify : undefined
  const avNoisy = av !== undefined && av.runs.some(x => x.otherCorePct > NOISY_OTHER_PCT)
  const avWhat = av === undefined ? '' : ` (${av.records.toLocaleString('en-US')} lines, ${av.chains} chains interleaved)`
  v = av?.linesPerSecond ?? null
  push(`audit verify, lines/s${avWhat}`, v, 'lines/s', '> 150,000 (issue 15)', v === null ? null : v > 150_000, avNoisy)
  v = av?.peakRssMb ?? null
  push(`audit verify, peak RSS${avWhat}`, v, 'MB', '< 150 MB (issue 15)', v === null ? null : v < 150, avNoisy)

  // Issue 19: each least-privilege tool over the same kind of log, over 200k lines/s and under 150 MB.
  if (evidence !== undefined && 'tools' in evidence) {
    const what = ` (${evidence.lines.toLocaleString('en-US')} lines, ${evidence.chains} chains interleaved)`
    for (const tool of evidence.tools) {
      const noisy = tool.runs.some(x => x.otherCorePct > NOISY_OTHER_PCT)
      push(`${tool.tool}, lines/s${what}`, tool.linesPerSecond, 'lines/s', '> 200,000 (issue 19)', tool.linesPerSecond > 200_000, noisy)
      push(`${tool.tool}, peak RSS${what}`, tool.peakRssMb, 'MB', '< 150 MB (issue 19)', tool.peakRssMb < 150, noisy)
    }
  }

  // Issue 21 (per-request cost): cheaper per request than node-reference, a share of nginx, the second
  // hop under 1.8x the first, memory within Envoy's, and an idle connection at most 30 KB.
  v = div(gh?.throughput.rpsPerProxyCore, ref?.throughput.rpsPerProxyCore)
  push('gatehouse / node-reference, req/s per proxy core', v, 'x', '>= 1.2 (issue 21)', atLeast(v, 1.2), noisyThr(gh) || noisyThr(ref))
  v = div(gh?.throughput.rpsPerProxyCore, ngx?.throughput.rpsPerProxyCore)
  push('gatehouse / nginx, req/s per proxy core', v, 'x', '>= 0.35 (issue 21)', atLeast(v, 0.35), noisyThr(gh) || noisyThr(ngx))
  v = gh?.latency.proxyCorePctAtRate ?? null
  const refAtRate = ref?.latency.proxyCorePctAtRate
  push('gatehouse core % at the fixed rate (node-reference beside it)', v, '%', `<= 15 and <= node-reference (${refAtRate === undefined ? 'n/a' : refAtRate.toFixed(0)}) (issue 21)`, v === null ? null : v <= 15 && (refAtRate === undefined || v <= refAtRate), noisyLat(gh) || noisyLat(ref))
  v = div(hop?.throughput.cpuSecondsPer10k, gh?.throughput.cpuSecondsPer10k)
  push('two-hop / gatehouse, CPU per request at saturation', v, 'x', '<= 1.8 (issue 21)', atMost(v, 1.8), noisyThr(hop) || noisyThr(gh))
  v = div(hop?.latency.proxyCorePctAtRate, gh?.latency.proxyCorePctAtRate)
  push('two-hop / gatehouse, CPU at the fixed rate', v, 'x', '<= 1.8 (issue 21)', atMost(v, 1.8), noisyLat(hop) || noisyLat(gh))
  v = gh?.peakRssMb ?? null
  push('gatehouse peak RSS under load', v, 'MB', '<= 100 MB (issue 21)', atMost(v, 100))
  v = gh?.anonRssMbAtEnd ?? null
  push('gatehouse anonymous RSS after the load phases', v, 'MB', '<= 48 MB (issue 21)', atMost(v, 48))
  // An idle kept-alive connection: the marginal RSS (bench/measure/idle.ts).
  const ghIdle = 'results' in idle ? idle.results.find(x => x.name === 'gatehouse') : undefined
  v = ghIdle?.kbPerConnection ?? null
  push('gatehouse KB per idle kept-alive connection (RSS, marginal)', v, 'KB', '<= 30 (issue 21)', atMost(v, 30))
  return out
}
