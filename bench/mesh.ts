// bench/mesh: two sidecars with CA-issued, fast-rotating identities. Measures
//   1. time from `gatehouse proxy` start to /readyz 200 (first SVID from the CA included),
//   2. latency and throughput of app -> outbound sidecar -> inbound sidecar -> app, next to a direct call,
//   3. failed requests across certificate rotations under constant load (leaf TTL of seconds).
// The CA, both sidecars and the app are separate processes; the load generator is this process,
// a closed loop (`npm run bench` measures the same path at a fixed open-model rate, pinned).
//   npm run bench:mesh [-- --seconds 20 --connections 8 --leaf-ttl 6s]
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makePki } from './lib/pki.ts'
import { start, firstJsonLine, killAll } from './lib/proc.ts'
import { startTwoHop } from './targets/two-hop.ts'
import { probe } from './measure/probe.ts'
import { runLoad, type LoadResult } from './load.ts'

const argText = (name: string, dflt: string): string => { const i = process.argv.indexOf(`--${name}`); return i === -1 ? dflt : process.argv[i + 1]! }
const seconds = Number(argText('seconds', '20'))
const connections = Number(argText('connections', '8'))
const leafTtl = argText('leaf-ttl', '6s')
const root = fileURLToPath(new URL('..', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'gh-bench-mesh-'))
process.on('exit', () => { killAll(); rmSync(dir, { recursive: true, force: true }) })

const pki = makePki(dir)
const app = start(process.execPath, [join(root, 'bench/app.ts'), '0', '--size', '1024'], { stdout: 'pipe', name: 'app' })
const appPort = (await firstJsonLine<{ port: number }>(app, 'app')).port
const env = { dir, pki, appPort, app, root, cli: join(root, 'src/cli.ts') }
const mesh = await startTwoHop(env, { kind: 'ca', leafTtl }, 'mesh')
await probe(env, mesh, 1024)

const before = mesh.rotations()
const results: Array<[string, LoadResult]> = []
results.push(['direct: app -> app (plain HTTP)', await runLoad(`http://127.0.0.1:${appPort}`, { connections, seconds: Math.min(10, seconds), path: '/v1/orders/12345' })])
results.push([`mesh: app -> outbound -> inbound -> app (${seconds}s)`, await runLoad(mesh.origin, { connections, seconds, path: mesh.path, ...(mesh.headers === undefined ? {} : { headers: mesh.headers }) })])
const after = mesh.rotations()
const meshRun = results[1]![1]

process.stdout.write(`bench/mesh on Node ${process.versions.node}, ${cpus().length} cores; CA, 2 sidecars, app and load generator share the machine; leaf TTL ${leafTtl}, ${connections} connections\n`)
process.stdout.write(`time from 'gatehouse proxy' start to ready (first SVID from the CA): sidecar B ${mesh.readyMs.b.toFixed(0)} ms, sidecar A ${mesh.readyMs.a.toFixed(0)} ms\n`)
process.stdout.write(`${'path'.padEnd(48)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'failed'.padStart(7)}\n`)
for (const [name, r] of results) process.stdout.write(`${name.padEnd(48)} ${r.rps.toFixed(0).padStart(8)} ${r.p50.toFixed(2).padStart(8)} ${r.p99.toFixed(2).padStart(8)} ${String(r.errors).padStart(7)}\n`)
if (meshRun.errors > 0) process.stdout.write(`failures by kind: ${JSON.stringify(meshRun.errorKinds)}\n`)
process.stdout.write(`certificate rotations during the mesh run: sidecar A ${after.a - before.a}, sidecar B ${after.b - before.b} (renewal failures: ${after.renewalFailures - before.renewalFailures}); failed requests: ${meshRun.errors} of ${meshRun.requests + meshRun.errors}\n`)
await mesh.stop()
process.exit(meshRun.errors === 0 ? 0 : 1)
