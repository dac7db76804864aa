// The gRPC load generator as its own (pinned) process, as load-worker.ts is for HTTP/1.1, with the same
// stdout protocol: `node bench/grpc-load-worker.ts '<GrpcLoadSpec JSON>'` warms up, prints
// {"event":"start"}, runs the measured phase, prints {"event":"result", ...} and exits.
// Unary calls on node:http2 client sessions: `connections` HTTP/2 connections, as a gRPC client
// keeps one per channel; closed loop with `streams` calls in flight per connection, or open model at
// a fixed rate (bench/load.ts: each call timed from when it was due). Over mTLS (ALPN h2, the bench
// client certificate), h2c with prior knowledge, or h2c inside a CONNECT tunnel (grpc_proxy).
import { readFileSync } from 'node:fs'
import { createSecureContext } from 'node:tls'
import { closedLoop, openLoop, type LoadResult, type OpenLoadResult } from './load.ts'
import { openH2, grpcCall } from './lib/grpc.ts'
import type { WorkerResult } from './load-worker.ts'

export interface GrpcLoadSpec {
  mode: 'closed' | 'open'
  /** https://: mTLS; http://: h2c (prior knowledge, or inside a CONNECT tunnel to `tunnel`). */
  origin: string
  /** :authority of every call. */
  authority: string
  tunnel?: string
  tls?: { ca: string, cert: string, key: string }
  /** HTTP/2 connections (calls are spread over them round robin). */
  connections: number
  /** closed mode: calls in flight per connection. */
  streams: number
  seconds: number
  warmupSeconds: number
  /** open mode: calls per second */
  rate?: number
}

const spec = JSON.parse(process.argv[2] ?? '{}') as GrpcLoadSpec
const secureContext = spec.tls === undefined
  ? undefined
  : createSecureContext({ ca: readFileSync(spec.tls.ca, 'utf8'), cert: readFileSync(spec.tls.cert, 'utf8'), key: readFileSync(spec.tls.key, 'utf8'), minVersion: 'TLSv1.3' })
const route = { origin: spec.origin, authority: spec.authority, ...(spec.tunnel === undefined ? {} : { tunnel: spec.tunnel }) }
const sessions = await Promise.all(Array.from({ length: spec.connections }, async () => await openH2(route, secureContext)))
const call = grpcCall(sessions, spec.authority, spec.origin.startsWith('https:') ? 'https' : 'http')
const phase = async (seconds: number): Promise<LoadResult | OpenLoadResult> => spec.mode === 'closed'
  ? await closedLoop(spec.connections * spec.streams, seconds, call)
  : await openLoop(spec.rate ?? 1000, seconds, call)

const warm = spec.warmupSeconds > 0 ? await phase(spec.warmupSeconds) : undefined
process.stdout.write('{"event":"start"}\n')
const cpu = process.cpuUsage()
const result = await phase(spec.seconds)
const used = process.cpuUsage(cpu)
const warmup = warm === undefined ? undefined : { seconds: spec.warmupSeconds, requests: warm.requests, errors: warm.errors, errorKinds: warm.errorKinds, p99: warm.p99, max: warm.max }
const out: WorkerResult = { event: 'result', mode: spec.mode, ...result, clientCpuSeconds: (used.user + used.system) / 1e6, ...(warmup === undefined ? {} : { warmup }) }
process.stdout.write(`${JSON.stringify(out)}\n`)
for (const s of sessions) s.destroy()
process.exit(0)
