// What every target of bench/run.ts provides: where the load generator sends the bench request, and
// which processes are "the proxy under test" (their CPU and memory are what the target costs).
// HTTP/1.1 targets are sent `GET /v1/orders/12345`; gRPC targets (`grpc` set) a unary call.
import type { Pki } from '../lib/pki.ts'
import type { Started } from '../lib/proc.ts'

export interface BenchEnv {
  /** The run's temp dir (certificates, configs, decision logs). */
  dir: string
  pki: Pki
  /** The upstream app every target forwards to (pinned with the proxy under test). */
  appPort: number
  app: Started
  /** The repository root (for bench/*.ts). */
  root: string
  /** The gatehouse entry point under test (compiled dist/cli.js, or src/cli.ts). */
  cli: string
  /** Extra Node flags for the sidecars started with this env (the baseline's GH_BENCH_BASELINE_FLAGS). */
  sidecarFlags?: string[]
}

export interface Target {
  name: string
  /** One line: what it is, for the Markdown. */
  description: string
  origin: string
  /** The request target: origin-form, or absolute-form for an HTTP proxy (two-hop). */
  path: string
  headers?: Record<string, string>
  /** The load generator presents the bench client certificate (mTLS). */
  tls: boolean
  /** What a fresh connection per request measures: a full mTLS handshake, a plain TCP connect, or nothing meaningful. */
  handshakes: 'mtls' | 'tcp' | 'none'
  /** The processes under test. */
  procs: Started[]
  /** The app behind the target (pinned with it, its CPU shown apart): the HTTP app unless set. */
  app?: Started
  /**
   * A gRPC target: sent unary calls (bench/lib/grpc.ts) on HTTP/2 instead of HTTP/1.1 GETs, by
   * grpc-load-worker.ts (node:http2) or, where it can (h2c, no client certificate, no proxy), h2load.
   * `path` and `headers` are not used; `tunnel`: the calls travel in a CONNECT tunnel to it.
   */
  grpc?: { driver: 'node' | 'h2load', authority: string, tunnel?: string }
  notes: string[]
  /** Anything worth recording after the load phases (e.g. counters scraped from /metrics). */
  inspect?: () => Promise<Record<string, unknown>>
  stop: () => Promise<void>
}

export class TargetSkipped extends Error {}
