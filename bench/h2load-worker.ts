// h2load (nghttp2) as the gRPC load generator where it can be one: h2c with prior knowledge, no
// client certificate (h2load cannot present one) and no proxy. Same stdin/stdout protocol as
// grpc-load-worker.ts, same spec: `node bench/h2load-worker.ts '<GrpcLoadSpec JSON>'` runs a warm-up
// h2load, prints {"event":"start"}, runs the measured h2load (printing {"event":"end"} as soon as it
// exits) and prints {"event":"result", ...} from its per-request log. This process only waits; the
// CPU reported as the load generator's is h2load's own (this process's cutime + cstime).
// Closed loop: -c connections -m streams. Open model: --rps rate/connections per connection, with
// room for 256 streams each, so a slow answer never holds the next call back; but h2load times a
// call from when it was sent, not from when it was due, and reports no send lag.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { histogramOf } from './lib/histogram.ts'
import { childrenCpuSeconds } from './lib/proc.ts'
import { GRPC_BODY, GRPC_HEADERS, GRPC_PATH, H2LOAD } from './lib/grpc.ts'
import type { GrpcLoadSpec } from './grpc-load-worker.ts'
import type { WorkerResult, WarmupSummary } from './load-worker.ts'
import type { LoadResult } from './load.ts'

const spec = JSON.parse(process.argv[2] ?? '{}') as GrpcLoadSpec
if (!spec.origin.startsWith('http:') || spec.tunnel !== undefined || spec.tls !== undefined) throw new Error('h2load drives h2c targets only (no client certificate, no CONNECT)')
const dir = mkdtempSync(join(tmpdir(), 'gh-h2load-'))
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }) })
const bodyFile = join(dir, 'call.bin')
writeFileSync(bodyFile, GRPC_BODY)

interface Run { stdout: string, seconds: number, requests: number, errors: number }
async function h2load (seconds: number, logFile?: string, onExit?: () => void): Promise<Run> {
  const args = ['-t', '1', '-c', String(spec.connections), '-D', `${Math.max(1, Math.round(seconds * 1000))}ms`, '-d', bodyFile,
    ...Object.entries(GRPC_HEADERS).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), '-H', `:authority: ${spec.authority}`,
    ...(spec.mode === 'closed' ? ['-m', String(spec.streams)] : ['-m', '256', '--rps', String((spec.rate ?? 1000) / spec.connections)]),
    ...(logFile === undefined ? [] : ['--log-file', logFile]), `${spec.origin}${GRPC_PATH}`]
  const child = spawn(H2LOAD, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null>((resolve, reject) => { child.once('error', reject); child.once('close', resolve) })
  onExit?.()
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(stdout)
  const f = /finished in ([\d.]+)(ms|s),/.exec(stdout)
  if (code !== 0 || m === null || f === null) throw new Error(`h2load exited ${String(code)}: ${stderr.slice(-500)}${stdout.slice(-500)}`)
  return { stdout, seconds: Number(f[1]) / (f[2] === 'ms' ? 1000 : 1), requests: Number(m[4]), errors: Number(m[5]) + Number(m[6]) + Number(m[7]) }
}

let warmup: WarmupSummary | undefined
if (spec.warmupSeconds > 0) {
  const w = await h2load(spec.warmupSeconds)
  warmup = { seconds: spec.warmupSeconds, requests: w.requests, errors: w.errors, errorKinds: w.errors > 0 ? { 'h2load failed/errored/timeout': w.errors } : {}, p99: NaN, max: NaN }
}
const logFile = join(dir, 'requests.log')
const cpu0 = childrenCpuSeconds('self')
process.stdout.write('{"event":"start"}\n')
const run = await h2load(spec.seconds, logFile, () => { process.stdout.write('{"event":"end"}\n') })
const clientCpuSeconds = childrenCpuSeconds('self') - cpu0

// One line per request: start (µs since the epoch), status (-1: the stream failed), µs to the end of the response.
const ms: number[] = []
const errorKinds: Record<string, number> = {}
for (const line of readFileSync(logFile, 'utf8').split('\n')) {
  const [, status, us] = line.split('\t')
  if (status === undefined || us === undefined) continue
  if (status === '200') ms.push(Number(us) / 1000)
  else { const k = status === '-1' ? 'stream failed' : `HTTP ${status}`; errorKinds[k] = (errorKinds[k] ?? 0) + 1 }
}
const sorted = Float64Array.from(ms).sort()
const n = sorted.length
const pct = (p: number): number => n === 0 ? NaN : sorted[Math.min(n - 1, Math.floor(n * p))]!
const errors = Object.values(errorKinds).reduce((a, b) => a + b, 0)
const result: LoadResult = { requests: n, errors, errorKinds, seconds: run.seconds, rps: n / run.seconds, p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), p999: pct(0.999), max: n === 0 ? NaN : sorted[n - 1]!, histogram: histogramOf(sorted) }
const out: WorkerResult = { event: 'result', mode: spec.mode, ...result, clientCpuSeconds, ...(warmup === undefined ? {} : { warmup }) }
process.stdout.write(`${JSON.stringify(out)}\n`)
process.exit(0)
