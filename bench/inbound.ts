// bench/inbound: keep-alive throughput and latency of an mTLS call through `gatehouse proxy` to an
// app on localhost, next to a plain HTTP call straight to the app. App and sidecar run as their own
// processes (as in a pod); the load generator is this process.
//   npm run bench:inbound [-- --seconds 10 --connections 16]
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { request } from 'undici'
import { initCa, loadCa } from '../src/ca/store.ts'
import { Issuer } from '../src/ca/issuer.ts'
import { generateKey } from '../src/x509/keys.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { runLoad, type LoadResult } from './load.ts'

const arg = (name: string, dflt: number): number => { const i = process.argv.indexOf(`--${name}`); return i === -1 ? dflt : Number(process.argv[i + 1]) }
const seconds = arg('seconds', 10)
const connections = arg('connections', 16)
const root = fileURLToPath(new URL('..', import.meta.url))

const dir = mkdtempSync(join(tmpdir(), 'gh-bench-inbound-'))
const children: ChildProcess[] = []
const cleanup = (): void => { for (const c of children) c.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }) }
process.on('exit', cleanup)

function issue (issuer: Issuer, id: string, name: string): { cert: string, key: string } {
  const key = generateKey('ec-p256')
  const svid = issuer.issue({ id: SpiffeId.parse(id), publicKey: key.publicKey })
  writeFileSync(join(dir, `${name}.pem`), svid.chainPem)
  writeFileSync(join(dir, `${name}-key.pem`), key.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  return { cert: svid.chainPem, key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }
}

async function firstLine (child: ChildProcess): Promise<string> {
  const rl = createInterface({ input: child.stdout! })
  for await (const line of rl) return line
  throw new Error('child exited before printing')
}

/** CPU seconds (user + system) a process has used so far, from /proc (clock ticks of 1/100 s). */
function cpuSeconds (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

function rssMb (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Number(m[1]) / 1024
}

initCa({ dir: join(dir, 'ca'), trustDomain: 'bench.local' })
const ca = loadCa(join(dir, 'ca'))
const issuer = new Issuer(ca)
issue(issuer, 'spiffe://bench.local/ns/bench/sa/server', 'server')
const client = issue(issuer, 'spiffe://bench.local/ns/bench/sa/client', 'client')
writeFileSync(join(dir, 'policy.yaml'), 'version: 1\nrules:\n  - name: bench\n    from: ["spiffe://bench.local/ns/bench/sa/client"]\n    methods: [GET]\n    paths: ["/v1/**"]\n')

const app = spawn(process.execPath, [join(root, 'bench/app.ts')], { stdio: ['ignore', 'pipe', 'inherit'] })
children.push(app)
const appPort = (JSON.parse(await firstLine(app)) as { port: number }).port

const sidecar = spawn(process.execPath, [...(process.env.GH_BENCH_PROF === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', process.env.GH_BENCH_PROF]), join(root, 'src/cli.ts'), 'proxy', '--inbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--upstream', `127.0.0.1:${appPort}`,
  '--policy', join(dir, 'policy.yaml'), '--trust-bundle', join(dir, 'ca/bundle.pem'), '--cert', join(dir, 'server.pem'), '--key', join(dir, 'server-key.pem')],
{ stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, GATEHOUSE_LOG_LEVEL: 'info' } })
children.push(sidecar)
// The decision log goes to stdout (discarded here, as a log shipper would consume it); the listening port is in the operational log.
let inboundPort = 0
for await (const line of createInterface({ input: sidecar.stderr! })) {
  const rec = JSON.parse(line) as { event?: string, port?: number }
  if (rec.event === 'inbound.listening') { inboundPort = rec.port!; break }
}

const tls = { ca: ca.bundlePem, cert: client.cert, key: client.key, checkServerIdentity: () => undefined }
const probe = await request(`https://127.0.0.1:${inboundPort}/v1/bench`, { dispatcher: new (await import('undici')).Agent({ connect: tls }) })
if (probe.statusCode !== 200) throw new Error(`sidecar answered ${probe.statusCode}`)
await probe.body.dump()

const results: Array<[string, LoadResult]> = []
results.push(['direct: HTTP to the app', await runLoad(`http://127.0.0.1:${appPort}`, { connections, seconds })])
const cpuBefore = cpuSeconds(sidecar.pid!)
results.push(['via sidecar: mTLS + policy + decision log', await runLoad(`https://127.0.0.1:${inboundPort}`, { connections, seconds, connect: tls })])
const sidecarCpu = cpuSeconds(sidecar.pid!) - cpuBefore
const viaSidecar = results[1]![1]
const sidecarRss = rssMb(sidecar.pid!)

process.stdout.write(`bench/inbound on Node ${process.versions.node}, ${cpus().length} cores (${cpus()[0]?.model ?? ''}), ${connections} keep-alive connections, ${seconds}s each; app, sidecar and load generator share the machine\n`)
process.stdout.write(`${'path'.padEnd(44)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p90 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'errors'.padStart(7)}\n`)
for (const [name, r] of results) {
  process.stdout.write(`${name.padEnd(44)} ${r.rps.toFixed(0).padStart(8)} ${r.p50.toFixed(2).padStart(8)} ${r.p90.toFixed(2).padStart(8)} ${r.p99.toFixed(2).padStart(8)} ${String(r.errors).padStart(7)}\n`)
}
process.stdout.write(`sidecar: ${(sidecarCpu / viaSidecar.seconds * 100).toFixed(0)}% of one core during the run, ${(sidecarCpu / viaSidecar.requests * 1e6).toFixed(0)} us CPU per request (=> ~${(viaSidecar.requests / sidecarCpu).toFixed(0)} req/s per core), RSS after load ${sidecarRss.toFixed(1)} MB\n`)
cleanup()
process.exit(0)
