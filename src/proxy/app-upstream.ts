import { forwardH1, type Upstream } from './forward-h1.ts'
import type { AppH1Pool } from './app-h1-pool.ts'
import { forwardH2, H2cUpstream } from './forward-h2.ts'
import type { ForwardOutcome, ForwardRequest, ResponseSink } from './exchange.ts'

// Which protocol a request takes to the app (--upstream-protocol): `http1` everything over HTTP/1.1,
// `h2c` everything over h2c, `auto` (default) gRPC over h2c (gRPC cannot travel over HTTP/1.1: it
// needs trailers) and the rest over HTTP/1.1, which every app speaks.

export const UPSTREAM_PROTOCOLS = ['auto', 'http1', 'h2c'] as const
export type UpstreamProtocol = typeof UPSTREAM_PROTOCOLS[number]

export interface AppUpstream {
  upstream: Upstream
  protocol: UpstreamProtocol
  /** Keep-alive HTTP/1.1 connections (app-h1-pool.ts). */
  pool: AppH1Pool
  /** The multiplexed h2c connection, made on first use. */
  h2c: H2cUpstream
  /** Time allowed for the app to start answering (response headers). */
  responseTimeoutMs: number
  connectTimeoutMs: number
}

export function createAppUpstream (upstream: Upstream, protocol: UpstreamProtocol, pool: AppH1Pool, timeouts: { responseTimeoutMs: number, connectTimeoutMs: number }): AppUpstream {
  return { upstream, protocol, pool, h2c: new H2cUpstream(upstream, timeouts.connectTimeoutMs), ...timeouts }
}

export function forwardToApp (fr: ForwardRequest, sink: ResponseSink, grpc: boolean, app: AppUpstream, done: (o: ForwardOutcome) => void): void {
  if (app.protocol === 'h2c' || (grpc && app.protocol === 'auto')) forwardH2(fr, sink, app.h2c.get(), { responseTimeoutMs: app.responseTimeoutMs, scheme: 'http' }, done)
  else forwardH1(fr, sink, app, done)
}
