// Opaque TCP in the bench (issue 17): redis-benchmark (Debian redis-tools) as the load generator,
// pinned to core 0 like every other generator, against a redis-server on core 1, directly or
// through a pair of tunnels (bench/targets/redis.ts). Measured in interleaved rounds like the HTTP
// targets (bench/measure/targets.ts), with the same /proc readings: CPU of the processes under test
// while a slice ran, the rest of the machine's ("other"), peak RSS. Three phases:
// - throughput: `-t set,get -c 50 -P 1 -d 100 -r 100000`, closed loop, -n sized from the last
//   measured rate so a slice lasts about as long as planned: commands/s, CPU per 10k commands and
//   the latency percentiles under that load;
// - one connection: the same commands on one connection, one at a time (-c 1): the round trip of a
//   command through the path without queueing. redis-benchmark has no fixed-rate mode, so this is
//   the latency figure instead of the HTTP targets' open model;
// - new connections: `-k 0` (a new connection per command, 16 at a time), CPU per connection: the
//   mTLS handshake between the tunnels, the callee's decision and its log lines.
// redis-benchmark opens its connections anew for every test, so each throughput slice includes
// `clients x tests` connection set-ups: their CPU (at the target's measured cost per connection) is
// taken out of the CPU per command, and shown on its own.
// Latencies are rebuilt from redis-benchmark's own distribution (every "<= V milliseconds
// (cumulative count C)" line, each count put at the line's upper value) into mergeable histograms.
import { connect } from 'node:net'
import { existsSync } from 'node:fs'
import { start, cpuSeconds, childrenCpuSeconds, coreBusySeconds, resetPeakRss, peakRssMb, anonRssMb, type Started } from './proc.ts'
import { bucketOf, merge, percentile, type Histogram } from './histogram.ts'
import { sum, median, interleave, type TargetResult } from '../measure/targets.ts'

export const REDIS_SERVER = '/usr/bin/redis-server'
export const REDIS_BENCHMARK = '/usr/bin/redis-benchmark'

export interface RedisPlan {
  rounds: number
  /** Warm-up of each throughput slice (its own connections). */
  warmupSeconds: number
  /** Totals per target over all rounds. */
  seconds: number
  latencySeconds: number
  /** Connections of the throughput phase. */
  clients: number
  /** SET/GET value size. */
  dataBytes: number
  tests: string[]
  /** New-connection phase: total seconds per target, connections at a time. */
  connectSeconds: number
  connectClients: number
}

/** A path to redis: where redis-benchmark connects, and the processes under test. */
export interface RedisTarget {
  name: string
  description: string
  port: number
  procs: Started[]
  /** redis-server (its CPU shown apart unless it is the target). */
  app: Started
  notes: string[]
  inspect?: () => Promise<Record<string, unknown>>
  stop: () => Promise<void>
}

export interface RedisResult {
  name: string
  description: string
  notes: string[]
  /**
   * As the HTTP targets' figures (per command instead of per request; each process: the caller's
   * tunnel, then the callee's), but cpuSecondsPer10k and cpuSecondsPer10kEach have the slices'
   * connection set-ups taken out.
   */
  throughput: Pick<TargetResult['throughput'], 'cpuSecondsPer10k' | 'cpuSecondsPer10kEach' | 'appCpuSecondsPer10k' | 'proxyCorePct' | 'appCorePct' | 'clientCorePct' | 'otherCorePct' | 'p50' | 'p99'> & {
    /** Median over the rounds (of each run's commands / the time redis-benchmark's tests took). */
    commandsPerSecond: number
    commands: number
    errors: number
    /** cpuSecondsPer10k with the set-ups left in (median over the rounds). */
    cpuSecondsPer10kWithSetup: number
    commandsPerProxyCore: number
    p999: number
    perRound: Array<{ commandsPerSecond: number, cpuSecondsPer10k: number, cpuSecondsPer10kWithSetup: number }>
  }
  /** One connection, one command at a time. */
  oneConnection: {
    commands: number
    commandsPerSecond: number
    p50: number
    p99: number
    p999: number
    max: number
    proxyCorePct: number
    otherCorePct: number
    perRoundP99: number[]
  }
  /** A new connection per command (-k 0). */
  connections?: {
    /** Median over the rounds. */
    perSecond: number
    connections: number
    errors: number
    /** CPU of the processes under test per connection (one GET on it included), and of each. */
    proxyCpuMsPerConnection: number
    proxyCpuMsPerConnectionEach: number[]
    otherCorePct: number
  }
  peakRssMb: number
  peakRssMbEach: number[]
  anonRssMbAtEnd: number
  inspect?: Record<string, unknown>
}

interface TestRun { test: string, requests: number, rps: number, histogram: Histogram }
interface Run { tests: TestRun[], requested: number, commands: number, connections: number, rps: number, histogram: Histogram, wallSeconds: number, clientCpuSeconds: number, cpu: number[], otherCorePct: number }

/** Parses redis-benchmark's default output (not --csv, not -q): one section per test. */
export function parseBenchmark (stdout: string): TestRun[] {
  const out: TestRun[] = []
  const parts = stdout.split(/====== (\S+) ======/)
  for (let i = 1; i + 1 < parts.length; i += 2) {
    const text = parts[i + 1]!
    const rps = /throughput summary: ([\d.]+) requests per second/.exec(text)
    const points: Array<[number, number]> = []
    for (const m of text.matchAll(/<= ([\d.]+) milliseconds \(cumulative count (\d+)\)/g)) points.push([Number(m[1]), Number(m[2])])
    points.sort((a, b) => a[0] - b[0] || a[1] - b[1])
    const histogram: Histogram = {}
    let seen = 0
    for (const [ms, c] of points) {
      if (c <= seen) continue
      const b = bucketOf(ms)
      histogram[b] = (histogram[b] ?? 0) + c - seen
      seen = c
    }
    if (rps === null) throw new Error(`redis-benchmark: no throughput summary for ${parts[i]!}`)
    out.push({ test: parts[i]!, requests: seen, rps: Number(rps[1]), histogram })
  }
  return out
}

/** One redis-benchmark run on core 0, with the CPU of `procs` and of the machine over it. */
async function runBenchmark (port: number, o: { clients: number, requests: number, tests: string[], dataBytes: number, keepAlive: boolean }, procs: Started[]): Promise<Run> {
  const args = ['-h', '127.0.0.1', '-p', String(port), '-t', o.tests.join(','), '-n', String(o.requests), '-c', String(o.clients), '-k', o.keepAlive ? '1' : '0', '-P', '1', '-d', String(o.dataBytes), '-r', '100000', '--precision', '3']
  const cpu0 = procs.map(p => cpuSeconds(p.pid))
  const busy0 = coreBusySeconds()
  const client0 = childrenCpuSeconds('self')
  const t0 = performance.now()
  const w = start(REDIS_BENCHMARK, args, { core: 0, stdout: 'pipe', name: 'redis-benchmark' })
  let stdout = ''
  w.child.stdout!.on('data', (d: Buffer) => { stdout += d.toString() })
  // A path that stops answering must not hang the run: redis-benchmark waits forever.
  const timer = setTimeout(() => { w.child.kill('SIGKILL') }, 120_000)
  await w.exited
  clearTimeout(timer)
  const wallSeconds = (performance.now() - t0) / 1000
  const cpu = procs.map((p, i) => cpuSeconds(p.pid) - cpu0[i]!)
  const busy = coreBusySeconds().reduce((a, b, i) => a + b - (busy0[i] ?? 0), 0)
  const clientCpuSeconds = childrenCpuSeconds('self') - client0
  if (w.child.exitCode !== 0) throw new Error(`redis-benchmark exited ${String(w.child.exitCode ?? w.child.signalCode)}: ${w.stderrTail.slice(-5).join(' ')}${stdout.slice(-300)}`)
  const tests = parseBenchmark(stdout)
  const commands = tests.reduce((a, t) => a + t.requests, 0)
  const busySeconds = tests.reduce((a, t) => a + t.requests / t.rps, 0)
  const ours = cpu.reduce((a, b) => a + b, 0) + clientCpuSeconds
  return { tests, requested: o.requests * o.tests.length, commands, connections: o.keepAlive ? o.clients * o.tests.length : commands, rps: commands / busySeconds, histogram: merge(tests.map(t => t.histogram)), wallSeconds, clientCpuSeconds, cpu, otherCorePct: Math.max(0, busy - ours) / wallSeconds * 100 }
}

/** SET then GET through the path: it must be a redis that answers, before it is measured. */
export async function probeRedis (t: RedisTarget): Promise<void> {
  const reply = await new Promise<string>((resolve, reject) => {
    let got = ''
    const s = connect(t.port, '127.0.0.1', () => { s.write('SET gatehouse:probe ok\r\nGET gatehouse:probe\r\n') })
    s.setTimeout(10_000, () => { s.destroy(new Error('no answer in 10 s')) })
    s.on('data', (d: Buffer) => { got += d.toString(); if (got.length >= 13) { s.end(); resolve(got) } })
    s.once('error', reject)
    s.once('close', () => { resolve(got) })
  })
  if (reply !== '+OK\r\n$2\r\nok\r\n') throw new Error(`${t.name}: probe answered ${JSON.stringify(reply.slice(0, 200))} (expected +OK and $2 ok)`)
}

/** Why redis targets cannot run here, or undefined. */
export function redisMissing (): string | undefined {
  if (!existsSync(REDIS_SERVER)) return `${REDIS_SERVER} is not installed (apt-get install redis-server)`
  if (!existsSync(REDIS_BENCHMARK)) return `${REDIS_BENCHMARK} is not installed (apt-get install redis-tools)`
  return undefined
}

type Phase = 'throughput' | 'latency' | 'connections'

export async function measureRedis (targets: RedisTarget[], plan: RedisPlan, log: (s: string) => void): Promise<{ results: RedisResult[], failed: Array<{ name: string, reason: string }> }> {
  if (targets.length === 0) return { results: [], failed: [] }
  const runs = new Map<RedisTarget, Record<Phase, Run[]>>(targets.map(t => [t, { throughput: [], latency: [], connections: [] }]))
  const failed = new Map<RedisTarget, string>()
  // Commands/s last seen per target and phase, to size -n; a first guess before the warm-up.
  const rate = new Map<string, number>()
  const watched = (t: RedisTarget): Started[] => t.procs.includes(t.app) ? t.procs : [...t.procs, t.app]
  const shape = (phase: Phase): { clients: number, tests: string[], keepAlive: boolean, seconds: number, what: string } =>
    phase === 'throughput'
      ? { clients: plan.clients, tests: plan.tests, keepAlive: true, seconds: plan.seconds, what: `redis throughput (${plan.clients} connections)` }
      : phase === 'latency'
        ? { clients: 1, tests: plan.tests, keepAlive: true, seconds: plan.latencySeconds, what: 'redis one connection, one command at a time' }
        : { clients: plan.connectClients, tests: ['get'], keepAlive: false, seconds: plan.connectSeconds, what: `redis new connection per command (${plan.connectClients} at a time)` }
  const sized = (t: RedisTarget, phase: Phase, seconds: number): number => {
    const s = shape(phase)
    return Math.max(s.clients * 20, 500, Math.round((rate.get(`${t.name} ${phase}`) ?? 2000) * seconds / s.tests.length))
  }
  for (const t of targets) for (const p of t.procs) resetPeakRss(p.pid)
  for (const phase of ['throughput', 'latency', 'connections'] as const) {
    const s = shape(phase)
    await interleave(targets, plan.rounds, s.what, async (t) => {
      const o = { clients: s.clients, tests: s.tests, dataBytes: plan.dataBytes, keepAlive: s.keepAlive }
      if (phase === 'throughput' && plan.warmupSeconds > 0) rate.set(`${t.name} ${phase}`, (await runBenchmark(t.port, { ...o, requests: sized(t, phase, plan.warmupSeconds) }, [])).rps)
      const r = await runBenchmark(t.port, { ...o, requests: sized(t, phase, s.seconds / plan.rounds) }, watched(t))
      rate.set(`${t.name} ${phase}`, r.rps)
      runs.get(t)![phase].push(r)
      return phase === 'latency' ? `p99 ${percentile(r.histogram, 0.99).toFixed(3)} ms` : `${r.rps.toFixed(0)}/s`
    }, log, failed)
  }

  const results: RedisResult[] = []
  for (const t of targets) {
    if (failed.has(t)) continue
    const { throughput: thr, latency: one, connections: conn } = runs.get(t)!
    const n = t.procs.length
    const appIsTarget = t.procs.includes(t.app)
    const proxyCpu = (r: Run): number => sum(r.cpu.slice(0, n))
    const appCpu = (r: Run): number => appIsTarget ? 0 : r.cpu.at(-1)!
    const wall = (rs: Run[]): number => sum(rs.map(r => r.wallSeconds))
    const other = (rs: Run[]): number => sum(rs.map(r => r.otherCorePct * r.wallSeconds)) / wall(rs)
    // CPU per new connection of each process under test (0 without a connection phase), to take the set-ups out.
    const connections = sum(conn.map(r => r.connections))
    const perConnEach = t.procs.map((_, i) => connections === 0 ? 0 : sum(conn.map(r => r.cpu[i] ?? 0)) / connections)
    const setup = (r: Run, i?: number): number => r.connections * (i === undefined ? sum(perConnEach) : perConnEach[i]!)
    const commands = sum(thr.map(r => r.commands))
    const perRound = thr.map(r => ({
      commandsPerSecond: r.rps,
      cpuSecondsPer10k: Math.max(0, proxyCpu(r) - setup(r)) / Math.max(1, r.commands) * 10_000,
      cpuSecondsPer10kWithSetup: proxyCpu(r) / Math.max(1, r.commands) * 10_000
    }))
    const cpu10k = median(perRound.map(r => r.cpuSecondsPer10k))
    const h = merge(thr.map(r => r.histogram))
    const h1 = merge(one.map(r => r.histogram))
    const rss = t.procs.map(p => peakRssMb(p.pid))
    const inspect = t.inspect === undefined ? undefined : await t.inspect()
    results.push({
      name: t.name,
      description: t.description,
      notes: t.notes,
      throughput: {
        commandsPerSecond: median(thr.map(r => r.rps)),
        commands,
        errors: sum(thr.map(r => Math.max(0, r.requested - r.commands))),
        cpuSecondsPer10k: cpu10k,
        cpuSecondsPer10kWithSetup: median(perRound.map(r => r.cpuSecondsPer10kWithSetup)),
        commandsPerProxyCore: cpu10k > 0 ? 10_000 / cpu10k : NaN,
        cpuSecondsPer10kEach: t.procs.map((_, i) => Math.max(0, sum(thr.map(r => (r.cpu[i] ?? 0) - setup(r, i)))) / Math.max(1, commands) * 10_000),
        appCpuSecondsPer10k: sum(thr.map(appCpu)) / Math.max(1, commands) * 10_000,
        proxyCorePct: sum(thr.map(proxyCpu)) / wall(thr) * 100,
        appCorePct: sum(thr.map(appCpu)) / wall(thr) * 100,
        clientCorePct: sum(thr.map(r => r.clientCpuSeconds)) / wall(thr) * 100,
        otherCorePct: other(thr),
        p50: percentile(h, 0.5),
        p99: percentile(h, 0.99),
        p999: percentile(h, 0.999),
        perRound
      },
      oneConnection: {
        commands: sum(one.map(r => r.commands)),
        commandsPerSecond: median(one.map(r => r.rps)),
        p50: percentile(h1, 0.5),
        p99: percentile(h1, 0.99),
        p999: percentile(h1, 0.999),
        max: percentile(h1, 1),
        proxyCorePct: sum(one.map(proxyCpu)) / wall(one) * 100,
        otherCorePct: other(one),
        perRoundP99: one.map(r => percentile(r.histogram, 0.99))
      },
      ...(conn.length === 0
        ? {}
        : {
            connections: {
              perSecond: median(conn.map(r => r.rps)),
              connections,
              errors: sum(conn.map(r => Math.max(0, r.requested - r.commands))),
              proxyCpuMsPerConnection: sum(perConnEach) * 1000,
              proxyCpuMsPerConnectionEach: perConnEach.map(x => x * 1000),
              otherCorePct: other(conn)
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
