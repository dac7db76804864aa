// bench/forward: the cost of the forwarding step alone. A plain HTTP front (no TLS, no policy) in
// front of the same app, built four ways: http-proxy (the design card's default), Gatehouse's
// forwarder (AppH1Pool, src/proxy/forward-h1.ts), undici's Pool.request, and node:http's client
// with a keep-alive Agent (what bench/node-reference.ts uses). Each front runs in its own
// process; the load generator reports req/s and latency, and we read each front's CPU per request.
//   node bench/forward.ts [--seconds 5 --connections 16]
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { runLoad } from './load.ts'

const arg = (name: string, dflt: number): number => { const i = process.argv.indexOf(`--${name}`); return i === -1 ? dflt : Number(process.argv[i + 1]) }
const seconds = arg('seconds', 5)
const connections = arg('connections', 16)
const here = fileURLToPath(new URL('.', import.meta.url))
const children: ChildProcess[] = []
process.on('exit', () => { for (const c of children) c.kill('SIGTERM') })

async function start (args: string[]): Promise<{ child: ChildProcess, port: number }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  for await (const line of createInterface({ input: child.stdout! })) return { child, port: (JSON.parse(line) as { port: number }).port }
  throw new Error(`${args.join(' ')} exited`)
}
const cpu = (pid: number): number => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' '); return (Number(f[11]) + Number(f[12])) / 100 }

const app = await start([join(here, 'app.ts')])
process.stdout.write(`bench/forward on Node ${process.versions.node}: ${connections} keep-alive connections, ${seconds}s each\n`)
process.stdout.write(`${'front'.padEnd(34)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'CPU us/req'.padStart(11)}\n`)
for (const kind of ['http-proxy', 'gatehouse-forward', 'undici-pool', 'node-http']) {
  const front = await start([join(here, 'forward-front.ts'), kind, String(app.port)])
  await runLoad(`http://127.0.0.1:${front.port}`, { connections, seconds: 1 }) // warm-up
  const before = cpu(front.child.pid!)
  const r = await runLoad(`http://127.0.0.1:${front.port}`, { connections, seconds })
  const used = cpu(front.child.pid!) - before
  process.stdout.write(`${kind.padEnd(34)} ${r.rps.toFixed(0).padStart(8)} ${r.p50.toFixed(2).padStart(8)} ${r.p99.toFixed(2).padStart(8)} ${(used / r.requests * 1e6).toFixed(0).padStart(11)}${r.errors > 0 ? `  (${r.errors} errors)` : ''}\n`)
  front.child.kill('SIGTERM')
}
process.exit(0)
