// npm run bench [-- --quick] [-- --only direct,gatehouse,rotation,micro,audit-verify,evidence,quarantine] [-- --only grpc] [-- --only idle]
//   GH_BENCH_PROF=DIR: V8 CPU profiles of the sidecars; GH_BENCH_SIDECAR_FLAGS='--max-semi-space-size=8': Node flags for the sidecars only.
// Sets everything up on 127.0.0.1 (a CA and certificates, the app, each target on random ports),
// runs every target under the same load generator in one run, then rotation under load and the
// micro-benches, and writes bench/results/latest.{json,md}, latency.svg and latency-grpc.svg. The
// load generator is pinned to core 0, the processes under test (and the app) to core 1. The gRPC
// targets (names starting "grpc "; `--only grpc` selects them all) are measured in the same rounds.
// The opaque TCP targets (names starting "redis "; `--only redis`) follow in rounds of their own,
// driven by redis-benchmark (bench/targets/redis.ts). After their load phases, the HTTP/1.1 targets'
// memory per idle kept-alive connection (bench/measure/idle.ts); `--only idle` starts every HTTP/1.1
// target for that phase alone.
import { mkdtempSync, rmSync, mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir, cpus, availableParallelism, release, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { makePki } from './lib/pki.ts'
import { buildGatehouse } from './lib/build.ts'
import { start, stop, firstJsonLine, killAll, pinning } from './lib/proc.ts'
import { TargetSkipped, type BenchEnv, type Target } from './targets/target.ts'
import { startDirect } from './targets/direct.ts'
import { startNodeReference } from './targets/node-reference.ts'
import { startNginx, ensureNginx, nginxVersion } from './targets/nginx.ts'
import { startGatehouse, POLICY_RULES } from './targets/gatehouse.ts'
import { startTwoHop } from './targets/two-hop.ts'
import { startGrpcApp, startGrpcDirect, stopGrpcApp, type GrpcApp } from './targets/grpc.ts'
import { redisStarters } from './targets/redis.ts'
import { probeRedis, measureRedis, type RedisPlan } from './lib/redis.ts'
import { measureTargets, type Plan, type TargetResult } from './measure/targets.ts'
import { measureIdle, idleMeasurable, type IdlePlan } from './measure/idle.ts'
import { measureRotation } from './measure/rotation.ts'
import { probe } from './measure/probe.ts'
import { computeRatios, type BenchResults } from './report/results.ts'
import { renderMarkdown } from './report/markdown.ts'
import { latencyChart, type LatencyBars } from './report/chart.ts'
import type { MicroResult, MicroSpec } from './micro-worker.ts'
import { auditSiemVerify } from './measure/audit.ts'
import { evidenceTools } from './measure/evidence.ts'
import { measureQuarantine, formatQuarantine, writeQuarantineResults } from './lib/quarantine.ts'

const quick = process.argv.includes('--quick')
const onlyAt = process.argv.indexOf('--only')
const only = onlyAt === -1 ? undefined : new Set((process.argv[onlyAt + 1] ?? '').split(','))
/** Whether a target or measurement was asked for: all by default; `--only` names them, or `grpc` (`redis`) for every gRPC (redis) target. */
const selected = (name: string): boolean => only === undefined || only.has(name) || (name.startsWith('grpc ') && !name.endsWith(' baseline') && only.has('grpc')) || (name.startsWith('redis ') && only.has('redis'))
const BODY_BYTES = 1024
const plan: Plan & IdlePlan & { rotationSeconds: number, rotationWarmupSeconds: number, rotationRate: number, leafTtl: string, microSeconds: number, auditLines: number } = quick
  ? { rounds: 1, warmupSeconds: 0.5, throughputSeconds: 2, connections: 64, latencySeconds: 2, latencyWarmupSeconds: 0.3, rate: 1000, handshakeSeconds: 1.5, handshakeConnections: 16, rotationSeconds: 13, rotationWarmupSeconds: 2, rotationRate: 500, leafTtl: '4s', microSeconds: 0.3, auditLines: 20_000, grpcConnections: 4, grpcStreams: 16, idleConnections: 150, idleSteps: 3, idleSettleMs: 300 }
  : { rounds: 5, warmupSeconds: 1, throughputSeconds: 15, connections: 64, latencySeconds: 30, latencyWarmupSeconds: 0.5, rate: 1000, handshakeSeconds: 8, handshakeConnections: 16, rotationSeconds: 60, rotationWarmupSeconds: 3, rotationRate: 500, leafTtl: '6s', microSeconds: 2, auditLines: 200_000, grpcConnections: 4, grpcStreams: 16, idleConnections: 1200, idleSteps: 3, idleSettleMs: 1500 }

// `--rounds N` with --quick: N quick rounds (every phase N times as long), for comparing two trees quickly.
const roundsAt = process.argv.indexOf('--rounds')
if (quick && roundsAt !== -1) {
  const n = Math.max(1, Number(process.argv[roundsAt + 1]))
  Object.assign(plan, { rounds: n, throughputSeconds: plan.throughputSeconds * n, latencySeconds: plan.latencySeconds * n, handshakeSeconds: plan.handshakeSeconds * n, idleConnections: 450, idleSettleMs: 500 })
}

// Opaque TCP (redis-benchmark against redis, direct, through stunnel and through two sidecars): its own rounds.
const redisPlan: RedisPlan = quick
  ? { rounds: 1, warmupSeconds: 0.3, seconds: 2, latencySeconds: 1, connectSeconds: 1, clients: 50, connectClients: 16, dataBytes: 100, tests: ['set', 'get'] }
  : { rounds: 5, warmupSeconds: 0.5, seconds: 20, latencySeconds: 10, connectSeconds: 5, clients: 50, connectClients: 16, dataBytes: 100, tests: ['set', 'get'] }

const root = fileURLToPath(new URL('..', import.meta.url))
const resultsDir = fileURLToPath(new URL('./results/', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'gh-bench-'))
const log = (s: string): void => { process.stderr.write(s) }
let cleaned = false
const cleanup = (): void => {
  if (cleaned) return
  cleaned = true
  killAll()
  rmSync(dir, { recursive: true, force: true })
}
process.on('exit', cleanup)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => { log(`\n${sig}: stopping\n`); process.exit(130) })

const t0 = performance.now()
const loadAtStart = loadavg()[0] ?? 0
const pin = pinning()
const pinningNote = pin.ok ? 'Load generator pinned to core 0; proxy under test and app pinned to core 1 (taskset)' : `NOT pinned (${pin.reason}): figures are less comparable`
log(`gatehouse bench (${quick ? 'quick' : 'full'}), temp dir ${dir}\n${pinningNote}\n`)
if (loadAtStart > 1) log(`warning: load average ${loadAtStart.toFixed(2)} before the run: other processes compete for the two cores and will inflate latencies\n`)

const pki = makePki(dir)
log('building gatehouse (tsc) ...')
const build = buildGatehouse(root, dir)
log(` ${build.how}\n`)
const app = start(process.execPath, [join(root, 'bench/app.ts'), '0', '--size', String(BODY_BYTES)], { core: 1, stdout: 'pipe', name: 'app' })
const appPort = (await firstJsonLine<{ port: number }>(app, 'app')).port
const env: BenchEnv = { dir, pki, appPort, app, root, cli: build.cli }
const mkdirIn = (parent: string, name: string): string => { const d = join(parent, name); mkdirSync(d, { recursive: true }); return d }
// Absolute: the build links the checkout's node_modules from a temporary directory.
const baselineRoot = process.env.GH_BENCH_BASELINE === undefined ? undefined : resolve(process.env.GH_BENCH_BASELINE)
const baselineCli = baselineRoot === undefined ? undefined : buildGatehouse(baselineRoot, join(dir, 'baseline')).cli
/** A baseline target's set-up: its own directory (the targets name their files by kind), and GH_BENCH_BASELINE_FLAGS for its sidecars. */
const baselineEnv = (sub: string): BenchEnv => ({ ...env, cli: baselineCli!, dir: mkdirIn(env.dir, sub), sidecarFlags: (process.env.GH_BENCH_BASELINE_FLAGS ?? '').split(' ').filter(f => f !== '') })

let nginx: string | null = null
// The gRPC app is started once, for the gRPC targets, if any is selected.
let grpcApp: GrpcApp | undefined
const grpc = async (): Promise<GrpcApp> => (grpcApp ??= await startGrpcApp(env))
const starters: Array<[string, () => Promise<Target>]> = [
  ['direct', async () => await startDirect(env)],
  ['node-reference', async () => await startNodeReference(env)],
  // An experiment (issue 21), run only when named: `--only lean-reference,...`.
  ...(only?.has('lean-reference') === true ? [['lean-reference', async () => await startNodeReference(env, 'lean-reference')] as [string, () => Promise<Target>]] : []),
  ['nginx', async () => await startNginx(env, log)],
  ['gatehouse', async () => await startGatehouse(env)],
  ['gatehouse two-hop', async () => await startTwoHop(env, { kind: 'static' })],
  // --mesh-http1 between the sidecars (issue 21), run only when named: `--only "gatehouse two-hop http1,..."`.
  ...(only?.has('gatehouse two-hop http1') === true ? [['gatehouse two-hop http1', async () => await startTwoHop(env, { kind: 'static' }, 'gatehouse two-hop http1', undefined, true)] as [string, () => Promise<Target>]] : []),
  // GH_BENCH_BASELINE=DIR: another checkout (with node_modules; this one for a flag experiment), built and run beside this one with the same set-up, for before/after figures from one run; GH_BENCH_BASELINE_FLAGS: Node flags for its sidecars only.
  ...(baselineCli === undefined ? [] : [
    ['gatehouse baseline', async () => ({ ...await startGatehouse(baselineEnv('baseline-one-hop')), name: 'gatehouse baseline' })],
    // Its own directory: the two-hop target names its files by kind, not by name.
    ['gatehouse two-hop baseline', async () => await startTwoHop(baselineEnv('baseline-two-hop'), { kind: 'static' }, 'gatehouse two-hop baseline')]
  ] as Array<[string, () => Promise<Target>]>),
  ['grpc direct (h2load)', async () => await startGrpcDirect(await grpc(), 'h2load')],
  ['grpc direct', async () => await startGrpcDirect(await grpc(), 'node')],
  ['grpc nginx', async () => await startNginx(env, log, await grpc())],
  ['grpc gatehouse', async () => await startGatehouse(env, await grpc())],
  ['grpc two-hop', async () => await startTwoHop(env, { kind: 'static' }, 'grpc two-hop', await grpc())],
  // The baseline's gRPC paths, only when named (`--only "grpc gatehouse,grpc gatehouse baseline"`).
  ...(baselineCli === undefined ? [] : [
    ['grpc gatehouse baseline', async () => ({ ...await startGatehouse(baselineEnv('baseline-grpc'), await grpc()), name: 'grpc gatehouse baseline' })],
    ['grpc two-hop baseline', async () => await startTwoHop(baselineEnv('baseline-grpc-two-hop'), { kind: 'static' }, 'grpc two-hop baseline', await grpc())]
  ] as Array<[string, () => Promise<Target>]>)
]
// Every target is started (and probed) first, then measured in interleaved rounds, then stopped.
const skipped: BenchResults['skipped'] = []
let failed = false
/** Starts and probes the selected targets of `list` in turn; one that cannot start is skipped with the reason (and fails the run unless TargetSkipped). */
async function startSelected<T extends { stop: () => Promise<void> }> (list: Array<[string, () => Promise<T>]>, check: (t: T) => Promise<void>, where: (t: T) => string, wanted = selected): Promise<T[]> {
  const out: T[] = []
  for (const [name, startTarget] of list) {
    if (!wanted(name)) continue
    log(`starting ${name} ...`)
    let t: T | undefined
    try {
      if (name.endsWith('nginx')) nginx = nginxVersion(ensureNginx(log)).replace(/^nginx version: /, '')
      t = await startTarget()
      await check(t)
      out.push(t)
      log(` ${where(t)}\n`)
    } catch (err) {
      const reason = err instanceof TargetSkipped ? err.message : `failed: ${(err as Error).message}`
      if (!(err instanceof TargetSkipped)) failed = true
      log(` skipped: ${reason}\n`)
      skipped.push({ name, reason })
      await t?.stop()
    }
  }
  return out
}
// `--only idle`: every HTTP/1.1 target is started for the idle phase, the load phases only for those named.
const forIdle = (name: string): boolean => only?.has('idle') === true && !name.startsWith('grpc ')
const started = await startSelected(starters, async t => { await probe(env, t, BODY_BYTES) }, t => t.origin, name => selected(name) || forIdle(name))
const measured = await measureTargets(env, started.filter(t => selected(t.name)), plan, log)
const targets = measured.results
if (measured.failed.length > 0) { failed = true; skipped.push(...measured.failed) }
// Issue 21: memory per idle kept-alive connection, on the HTTP/1.1 targets still up (and warm from the load phases).
const idleTargets = started.filter(t => idleMeasurable(t) && !measured.failed.some(f => f.name === t.name))
const idle: BenchResults['idle'] = idleTargets.length === 0 ? { skipped: 'no HTTP/1.1 target selected (--only)' } : await measureIdle(env, idleTargets, plan, log)
if ('failed' in idle && idle.failed.length > 0) failed = true
await Promise.all(started.map(async t => { await t.stop() }))
await stopGrpcApp(grpcApp)
// Opaque TCP: redis and the paths to it, measured in rounds of their own.
const redisPaths = redisStarters(env)
const redisStarted = await startSelected(redisPaths.list, probeRedis, t => `127.0.0.1:${t.port}`)
const redis = await measureRedis(redisStarted, redisPlan, log)
if (redis.failed.length > 0) { failed = true; skipped.push(...redis.failed) }
await Promise.all(redisStarted.map(async t => { await t.stop() }))
await redisPaths.stop()

let rotation: BenchResults['rotation'] = { skipped: 'not selected (--only)' }
if (selected('rotation')) {
  log('rotation under load:\n')
  try {
    rotation = await measureRotation(env, { leafTtl: plan.leafTtl, rate: plan.rotationRate, seconds: plan.rotationSeconds, warmupSeconds: plan.rotationWarmupSeconds }, log)
  } catch (err) {
    failed = true
    rotation = { skipped: `failed: ${(err as Error).message}` }
    log(`  ${rotation.skipped}\n`)
  }
}
await stop(app)

let micro: BenchResults['micro'] = { skipped: 'not selected (--only)' }
if (selected('micro')) {
  log('micro-benches (policy, CA, decision log) ...')
  const spec: MicroSpec = { seconds: plan.microSeconds, auditLines: plan.auditLines }
  const w = start(process.execPath, [join(root, 'bench/micro-worker.ts'), JSON.stringify(spec)], { core: 1, stdout: 'pipe', name: 'micro-worker' })
  for await (const line of createInterface({ input: w.child.stdout! })) micro = JSON.parse(line) as MicroResult
  await w.exited
  if ('skipped' in micro) { failed = true; micro = { skipped: `failed: ${w.stderrTail.join('\n')}` } }
  log(' done\n')
}

// Issue 15: `gatehouse audit verify` (the built CLI) on 5M lines from 50 chains, interleaved (200k quick).
let auditVerify: BenchResults['auditVerify'] = { skipped: 'not selected (--only)' }
if (selected('audit-verify')) {
  const lines = quick ? 200_000 : 5_000_000
  log(`audit verify, ${lines.toLocaleString('en-US')} lines from 50 chains:`)
  try {
    auditVerify = await auditSiemVerify({ lines, chains: 50, runs: quick ? 1 : 3, cli: env.cli }, log)
  } catch (err) {
    failed = true
    auditVerify = { skipped: `failed: ${(err as Error).message}` }
  }
  log(' done\n')
}

// Issue 19: policy suggest / replay, audit query --unused-rules, audit graph on 5M lines from 50 chains (200k quick).
let evidence: BenchResults['evidence'] = { skipped: 'not selected (--only)' }
if (selected('evidence')) {
  const lines = quick ? 200_000 : 5_000_000
  log(`least-privilege tools, ${lines.toLocaleString('en-US')} lines from 50 chains:`)
  try {
    evidence = await evidenceTools({ lines, chains: 50, runs: quick ? 1 : 3, cli: env.cli }, log)
  } catch (err) {
    failed = true
    evidence = { skipped: `failed: ${(err as Error).message}` }
  }
  log(' done\n')
}

// Issue 18: from `quarantine add` to the last request served at each callee, in this process (bench/lib/quarantine.ts); bench/results/quarantine.json.
if (selected('quarantine')) {
  log('quarantine propagation:\n')
  try {
    const q = await measureQuarantine({ runs: quick ? 3 : 20 }, log)
    writeQuarantineResults(resultsDir, q)
    log(formatQuarantine(q))
  } catch (err) {
    failed = true
    log(`  failed: ${(err as Error).message}\n`)
  }
}

const results: BenchResults = {
  date: new Date().toISOString(),
  mode: quick ? 'quick' : 'full',
  durationSeconds: (performance.now() - t0) / 1000,
  machine: { cpu: cpus()[0]?.model.trim() ?? 'unknown CPU', cores: availableParallelism(), node: process.versions.node, nginx, kernel: release(), pinning: pinningNote, loadAverageAtStart: loadAtStart, gatehouse: build.how },
  plan: { ...plan, bodyBytes: BODY_BYTES, policyRules: POLICY_RULES, redis: redisPlan },
  targets,
  idle,
  redis: redis.results,
  skipped,
  rotation,
  micro,
  auditVerify,
  evidence,
  ratios: computeRatios(targets, rotation, redis.results, auditVerify, evidence, idle)
}
mkdirSync(resultsDir, { recursive: true })
const markdown = renderMarkdown(results)
writeFileSync(join(resultsDir, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`)
writeFileSync(join(resultsDir, 'latest.md'), markdown)
const bars = (protocol: TargetResult['protocol']): LatencyBars[] => targets.filter(t => t.protocol === protocol).map(t => ({ name: t.name, p50: t.latency.p50, p99: t.latency.p99, p999: t.latency.p999 }))
writeFileSync(join(resultsDir, 'latency.svg'), latencyChart(bars('http/1.1'), `latency at ${plan.rate} req/s (ms, log scale)`))
writeFileSync(join(resultsDir, 'latency-grpc.svg'), latencyChart(bars('grpc'), `gRPC unary calls, latency at ${plan.rate} calls/s (ms, log scale)`))
log(`\nwrote ${join(resultsDir, 'latest.json')}, latest.md, latency.svg and latency-grpc.svg (${results.durationSeconds.toFixed(0)} s)\n\n`)
process.stdout.write(markdown)
cleanup()
process.exit(failed ? 1 : 0)
