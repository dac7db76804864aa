// The load generator as its own process, so bench/run.ts can pin it to core 0 and nothing else runs
// on its event loop. `node bench/load-worker.ts '<LoadSpec JSON>'`: warms up, prints {"event":"start"},
// runs the measured phase, prints {"event":"result", ...} and exits.
// Mode idle (bench/measure/idle.ts): prints {"event":"start"}, then opens `connections` kept-alive
// connections in `steps` equal steps, each making one GET and then staying idle; after each step it
// prints {"event":"idle","step":k,"open":N} and waits for a line on stdin (the parent reads the
// target's memory meanwhile); after the last, the result; then it closes them all and exits.
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { createSecureContext } from 'node:tls'
import { Client, Pool, type Dispatcher } from 'undici'
import { runLoad, runOpenLoad, runHandshakes, openIdle, Recorder, IDLE_CONCURRENCY, type LoadResult } from './load.ts'
import type { Histogram } from './lib/histogram.ts'

export interface LoadSpec {
  mode: 'closed' | 'open' | 'handshake' | 'idle'
  origin: string
  path: string
  headers?: Record<string, string>
  /** PEM files: trust anchors for the server, and the client certificate chain and key to present. */
  tls?: { ca: string, cert: string, key: string }
  connections: number
  seconds: number
  warmupSeconds: number
  /** open mode: requests per second */
  rate?: number
  /** idle mode: `connections` are opened in this many equal steps (1 if unset). */
  steps?: number
}

/** The warm-up's own figures: not part of the measured result, but a failed request there still counts. */
export interface WarmupSummary { seconds: number, requests: number, errors: number, errorKinds: Record<string, number>, p99: number, max: number }

export type WorkerResult = LoadResult & { event: 'result', mode: LoadSpec['mode'], clientCpuSeconds: number, sendLagP99?: number, sendLagMax?: number, sendLagHistogram?: Histogram, warmup?: WarmupSummary }

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec
const tls = spec.tls === undefined
  ? undefined
  : {
      // One context for every connection: built from PEM per connection it would cost the client
      // more than the handshake itself, and the handshake rate would measure the load generator.
      secureContext: createSecureContext({
        ca: readFileSync(spec.tls.ca, 'utf8'),
        cert: readFileSync(spec.tls.cert, 'utf8'),
        key: readFileSync(spec.tls.key, 'utf8'),
        minVersion: 'TLSv1.3'
      }),
      // SVIDs name a SPIFFE ID, not a host name: the chain is checked against `ca`, the name is not.
      checkServerIdentity: () => undefined,
      // Never resume a session: every new connection is a full handshake.
      maxCachedSessions: 0
    }
const pool = new Pool(spec.origin, { connections: spec.connections, pipelining: 1, keepAliveTimeout: 60_000, ...(tls === undefined ? {} : { connect: tls }) })
const shape = { path: spec.path, ...(spec.headers === undefined ? {} : { headers: spec.headers }) }

/** Mode idle: every connection, each its own undici Client, kept open until the process exits. */
const kept: Dispatcher[] = []
async function idleSteps (): Promise<LoadResult> {
  const steps = Math.max(1, spec.steps ?? 1)
  const rec = new Recorder()
  let open = 0
  // Longer than the targets' own idle timeouts (60 s), so the client is never the one to close;
  // a target that does not answer fails the connection after 10 s instead of hanging the phase.
  const client = (): Dispatcher => new Client(spec.origin, { pipelining: 1, keepAliveTimeout: 120_000, keepAliveMaxTimeout: 120_000, connectTimeout: 10_000, headersTimeout: 10_000, bodyTimeout: 10_000, ...(tls === undefined ? {} : { connect: tls }) })
    .on('connect', () => { open++ })
    .on('disconnect', () => { open-- })
  const parent = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  let opening = 0
  for (let k = 1; k <= steps; k++) {
    const t0 = performance.now()
    const count = Math.round(spec.connections * k / steps) - Math.round(spec.connections * (k - 1) / steps)
    await openIdle(rec, kept, client, spec.origin, shape, { count, concurrency: IDLE_CONCURRENCY })
    opening += performance.now() - t0
    process.stdout.write(`${JSON.stringify({ event: 'idle', step: k, open })}\n`)
    if ((await parent.next()).done === true) process.exit(1) // the parent is gone
  }
  // requests: connections that got their 200; rps: connections opened per second of opening.
  return rec.result(opening / 1000)
}

let result: LoadResult & { sendLagP99?: number, sendLagMax?: number, sendLagHistogram?: Histogram }
let cpu: NodeJS.CpuUsage
let warm: LoadResult | undefined
if (spec.mode === 'closed') {
  if (spec.warmupSeconds > 0) warm = await runLoad(spec.origin, { ...shape, connections: spec.connections, seconds: spec.warmupSeconds, dispatcher: pool })
  process.stdout.write('{"event":"start"}\n')
  cpu = process.cpuUsage()
  result = await runLoad(spec.origin, { ...shape, connections: spec.connections, seconds: spec.seconds, dispatcher: pool })
} else if (spec.mode === 'open') {
  const rate = spec.rate ?? 1000
  if (spec.warmupSeconds > 0) warm = await runOpenLoad(spec.origin, pool, { ...shape, rate, seconds: spec.warmupSeconds })
  process.stdout.write('{"event":"start"}\n')
  cpu = process.cpuUsage()
  result = await runOpenLoad(spec.origin, pool, { ...shape, rate, seconds: spec.seconds })
} else if (spec.mode === 'idle') {
  process.stdout.write('{"event":"start"}\n')
  cpu = process.cpuUsage()
  result = await idleSteps()
} else {
  if (spec.warmupSeconds > 0) warm = await runHandshakes(spec.origin, pool, { ...shape, connections: spec.connections, seconds: spec.warmupSeconds })
  process.stdout.write('{"event":"start"}\n')
  cpu = process.cpuUsage()
  result = await runHandshakes(spec.origin, pool, { ...shape, connections: spec.connections, seconds: spec.seconds })
}
const used = process.cpuUsage(cpu)
const warmup = warm === undefined ? undefined : { seconds: spec.warmupSeconds, requests: warm.requests, errors: warm.errors, errorKinds: warm.errorKinds, p99: warm.p99, max: warm.max }
const out: WorkerResult = { event: 'result', mode: spec.mode, ...result, clientCpuSeconds: (used.user + used.system) / 1e6, ...(warmup === undefined ? {} : { warmup }) }
process.stdout.write(`${JSON.stringify(out)}\n`)
await Promise.all(kept.map(async c => { await c.destroy() }))
await pool.destroy()
process.exit(0)
