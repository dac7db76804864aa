// bench/inbound: a quick look at one path, keep-alive throughput and latency of an mTLS call through
// `gatehouse proxy` (the 50-rule policy, decision log to a file) next to a plain HTTP call to the
// app. App and sidecar run as their own processes; the load generator is this process, unpinned.
// `npm run bench` is the full comparison (node-reference, nginx, two-hop, pinned cores).
//   npm run bench:inbound [-- --seconds 10 --connections 16]   (GH_BENCH_PROF=DIR: a CPU profile of the sidecar)
//   npm run bench:inbound -- --rate 1000   (the sidecar's path at a fixed rate, open model, instead of the closed loop)
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makePki } from './lib/pki.ts'
import { start, firstJsonLine, killAll, cpuSeconds, rssMb, wakeups } from './lib/proc.ts'
import { startGatehouse } from './targets/gatehouse.ts'
import { probe } from './measure/probe.ts'
import { runLoad, runOpenLoad, type LoadResult } from './load.ts'
import { Pool } from 'undici'
import { readFileSync } from 'node:fs'

const arg = (name: string, dflt: number): number => { const i = process.argv.indexOf(`--${name}`); return i === -1 ? dflt : Number(process.argv[i + 1]) }
const seconds = arg('seconds', 10)
const connections = arg('connections', 16)
const rate = arg('rate', 0)
const root = fileURLToPath(new URL('..', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'gh-bench-inbound-'))
process.on('exit', () => { killAll(); rmSync(dir, { recursive: true, force: true }) })

const pki = makePki(dir)
const app = start(process.execPath, [join(root, 'bench/app.ts'), '0', '--size', '1024'], { stdout: 'pipe', name: 'app' })
const appPort = (await firstJsonLine<{ port: number }>(app, 'app')).port
const env = { dir, pki, appPort, app, root, cli: join(root, 'src/cli.ts') }
const target = await startGatehouse(env)
await probe(env, target, 1024)
const sidecar = target.procs[0]!
const tls = { ca: readFileSync(pki.bundle, 'utf8'), cert: readFileSync(pki.client.cert, 'utf8'), key: readFileSync(pki.client.key, 'utf8'), checkServerIdentity: () => undefined }

const results: Array<[string, LoadResult]> = []
results.push(['direct: HTTP to the app', await runLoad(`http://127.0.0.1:${appPort}`, { connections, seconds, path: target.path })])
const cpuBefore = cpuSeconds(sidecar.pid)
const wakeupsBefore = wakeups(sidecar.pid)
if (rate > 0) {
  const pool = new Pool(target.origin, { connections, pipelining: 1, keepAliveTimeout: 60_000, connect: tls })
  results.push([`via sidecar at ${rate} req/s (open model)`, await runOpenLoad(target.origin, pool, { rate, seconds, path: target.path })])
  await pool.close()
} else results.push(['via sidecar: mTLS + policy + decision log', await runLoad(target.origin, { connections, seconds, path: target.path, connect: tls })])
const sidecarCpu = cpuSeconds(sidecar.pid) - cpuBefore
const sidecarWakeups = wakeups(sidecar.pid) - wakeupsBefore
const viaSidecar = results[1]![1]

process.stdout.write(`bench/inbound on Node ${process.versions.node}, ${cpus().length} cores (${cpus()[0]?.model ?? ''}), ${connections} keep-alive connections, ${seconds}s each; app, sidecar and load generator share the machine\n`)
process.stdout.write(`${'path'.padEnd(44)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p90 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'errors'.padStart(7)}\n`)
for (const [name, r] of results) {
  process.stdout.write(`${name.padEnd(44)} ${r.rps.toFixed(0).padStart(8)} ${r.p50.toFixed(2).padStart(8)} ${r.p90.toFixed(2).padStart(8)} ${r.p99.toFixed(2).padStart(8)} ${String(r.errors).padStart(7)}\n`)
}
process.stdout.write(`sidecar: ${(sidecarCpu / viaSidecar.seconds * 100).toFixed(0)}% of one core during the run, ${(sidecarCpu / viaSidecar.requests * 1e6).toFixed(0)} us CPU per request (=> ~${(viaSidecar.requests / sidecarCpu).toFixed(0)} req/s per core), ${(sidecarWakeups / viaSidecar.requests).toFixed(2)} wakeups per request (all its threads), RSS after load ${rssMb(sidecar.pid).toFixed(1)} MB\n`)
await target.stop()
process.exit(0)
