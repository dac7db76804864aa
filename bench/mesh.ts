// bench/mesh: two sidecars with CA-issued, fast-rotating identities. Measures
//   1. time from `gatehouse proxy` start to /readyz 200 (first SVID from the CA included),
//   2. latency and throughput of app -> outbound sidecar -> inbound sidecar -> app, next to a direct call,
//   3. failed requests across certificate rotations under constant load (leaf TTL of seconds).
// The CA, both sidecars and the app are separate processes; the load generator is this process.
//   npm run bench:mesh [-- --seconds 20 --connections 8 --leaf-ttl 6s]
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { ProxyAgent, request } from 'undici'
import { runLoad, type LoadResult } from './load.ts'

const argText = (name: string, dflt: string): string => { const i = process.argv.indexOf(`--${name}`); return i === -1 ? dflt : process.argv[i + 1]! }
const seconds = Number(argText('seconds', '20'))
const connections = Number(argText('connections', '8'))
const leafTtl = argText('leaf-ttl', '6s')
const root = fileURLToPath(new URL('..', import.meta.url))
const cli = join(root, 'src/cli.ts')
const dir = mkdtempSync(join(tmpdir(), 'gh-bench-mesh-'))
const children: ChildProcess[] = []
const cleanup = (): void => { for (const c of children) c.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }) }
process.on('exit', cleanup)

const gatehouse = (...args: string[]): string => execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8' })
interface Proc { child: ChildProcess, events: Array<Record<string, any>>, waitFor: (event: string) => Promise<Record<string, any>> }
function start (args: string[], name: string): Proc {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  children.push(child)
  const events: Array<Record<string, any>> = []
  const waiters: Array<{ event: string, resolve: (r: Record<string, any>) => void }> = []
  createInterface({ input: child.stderr! }).on('line', (line) => {
    let rec: Record<string, any>
    try { rec = JSON.parse(line) as Record<string, any> } catch { process.stderr.write(`[${name}] ${line}\n`); return }
    events.push(rec)
    for (const w of waiters.filter(w => w.event === rec.event)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(rec) }
  })
  return { child, events, waitFor: async (event) => await new Promise(resolve => { const hit = events.find(e => e.event === event); if (hit !== undefined) resolve(hit); else waiters.push({ event, resolve }) }) }
}
const freePort = async (): Promise<number> => {
  const { createServer } = await import('node:net')
  return await new Promise(resolve => { const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => { resolve(p) }) }) })
}

gatehouse('ca', 'init', '--dir', join(dir, 'ca'), '--trust-domain', 'bench.local')
const caPort = await freePort()
const ca = start([cli, 'ca', 'serve', '--dir', join(dir, 'ca'), '--listen', `127.0.0.1:${caPort}`, '--leaf-ttl', leafTtl, '--rate-burst', '1000', '--rate-per-minute', '10000'], 'ca')
await ca.waitFor('ca.listening')

const app = spawn(process.execPath, [join(root, 'bench/app.ts')], { stdio: ['ignore', 'pipe', 'inherit'] })
children.push(app)
const appPort = (JSON.parse((await createInterface({ input: app.stdout! })[Symbol.asyncIterator]().next()).value as string) as { port: number }).port

const ports = { bIn: await freePort(), bAdmin: await freePort(), aOut: await freePort(), aAdmin: await freePort(), aIn: await freePort(), bOut: await freePort() }
writeFileSync(join(dir, 'b-policy.yaml'), 'version: 1\nrules:\n  - name: a-reads\n    from: ["spiffe://bench.local/ns/a/sa/caller"]\n    methods: [GET]\n    paths: ["/v1/**"]\n')
writeFileSync(join(dir, 'a-policy.yaml'), 'version: 1\nrules: []\n')
writeFileSync(join(dir, 'a-routes.yaml'), `version: 1\nroutes:\n  - host: b.internal\n    address: 127.0.0.1:${ports.bIn}\n    id: spiffe://bench.local/ns/b/sa/server\n`)
writeFileSync(join(dir, 'b-token'), gatehouse('ca', 'token', '--dir', join(dir, 'ca'), '--spiffe-id', 'spiffe://bench.local/ns/b/sa/server'))
writeFileSync(join(dir, 'a-token'), gatehouse('ca', 'token', '--dir', join(dir, 'ca'), '--spiffe-id', 'spiffe://bench.local/ns/a/sa/caller'))

const common = ['--trust-bundle', join(dir, 'ca/bundle.pem'), '--ca-url', `https://127.0.0.1:${caPort}`]
async function readyAfter (admin: number, t0: number): Promise<number> {
  for (;;) {
    try { const r = await request(`http://127.0.0.1:${admin}/readyz`); await r.body.dump(); if (r.statusCode === 200) return performance.now() - t0 } catch { /* not listening yet */ }
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}
let t0 = performance.now()
const b = start([cli, 'proxy', '--inbound', `127.0.0.1:${ports.bIn}`, '--admin', `127.0.0.1:${ports.bAdmin}`, '--outbound', `127.0.0.1:${ports.bOut}`, '--upstream', `127.0.0.1:${appPort}`, '--policy', join(dir, 'b-policy.yaml'), '--token-file', join(dir, 'b-token'), ...common], 'sidecar-b')
const readyB = await readyAfter(ports.bAdmin, t0)
t0 = performance.now()
const a = start([cli, 'proxy', '--inbound', `127.0.0.1:${ports.aIn}`, '--admin', `127.0.0.1:${ports.aAdmin}`, '--outbound', `127.0.0.1:${ports.aOut}`, '--upstream', '127.0.0.1:1', '--policy', join(dir, 'a-policy.yaml'), '--routes', join(dir, 'a-routes.yaml'), '--token-file', join(dir, 'a-token'), ...common], 'sidecar-a')
const readyA = await readyAfter(ports.aAdmin, t0)

const proxy = new ProxyAgent({ uri: `http://127.0.0.1:${ports.aOut}`, connections: connections * 2 })
const warm = await request('http://b.internal/v1/bench', { dispatcher: proxy })
if (warm.statusCode !== 200) throw new Error(`mesh call answered ${warm.statusCode}: ${await warm.body.text()}`)
await warm.body.dump()

const rotations = (p: Proc): number => p.events.filter(e => e.event === 'identity.rotated').length
const before = { a: rotations(a), b: rotations(b) }
const results: Array<[string, LoadResult]> = []
results.push(['direct: app -> app (plain HTTP)', await runLoad(`http://127.0.0.1:${appPort}`, { connections, seconds: Math.min(10, seconds) })])
results.push([`mesh: app -> outbound -> inbound -> app (${seconds}s)`, await runLoad('http://b.internal', { connections, seconds, dispatcher: proxy })])
const rotated = { a: rotations(a) - before.a, b: rotations(b) - before.b }
const failures = { a: a.events.filter(e => e.event === 'identity.renewal_failed').length, b: b.events.filter(e => e.event === 'identity.renewal_failed').length }

process.stdout.write(`bench/mesh on Node ${process.versions.node}, ${cpus().length} cores; CA, 2 sidecars, app and load generator share the machine; leaf TTL ${leafTtl}, ${connections} connections\n`)
process.stdout.write(`time from 'gatehouse proxy' start to ready (first SVID from the CA): sidecar B ${readyB.toFixed(0)} ms, sidecar A ${readyA.toFixed(0)} ms\n`)
process.stdout.write(`${'path'.padEnd(48)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'failed'.padStart(7)}\n`)
for (const [name, r] of results) process.stdout.write(`${name.padEnd(48)} ${r.rps.toFixed(0).padStart(8)} ${r.p50.toFixed(2).padStart(8)} ${r.p99.toFixed(2).padStart(8)} ${String(r.errors).padStart(7)}\n`)
if (results[1]![1].errors > 0) process.stdout.write(`failures by kind: ${JSON.stringify(results[1]![1].errorKinds)}\n`)
process.stdout.write(`certificate rotations during the mesh run: sidecar A ${rotated.a}, sidecar B ${rotated.b} (renewal failures: ${failures.a + failures.b}); failed requests: ${results[1]![1].errors} of ${results[1]![1].requests + results[1]![1].errors}\n`)
await proxy.close()
cleanup()
process.exit(results[1]![1].errors === 0 ? 0 : 1)
