// The gRPC app (bench/grpc-app.ts: grpc-js over h2c, pinned with the proxies) and the two direct gRPC
// targets: the floor, driven once by h2load and once by the node:http2 load generator that drives
// every other gRPC target (h2load cannot present a client certificate or go through a proxy), so the
// difference between the two rows is what the Node generator itself adds. The proxied gRPC targets
// are the HTTP ones started with this app as their backend: gatehouse.ts, two-hop.ts, nginx.ts.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { BenchEnv, Target } from './target.ts'
import { TargetSkipped } from './target.ts'
import { start, stop, firstJsonLine, type Started } from '../lib/proc.ts'
import { GRPC_PATH, H2LOAD } from '../lib/grpc.ts'

export interface GrpcApp { port: number, proc: Started }

export async function startGrpcApp (env: BenchEnv): Promise<GrpcApp> {
  const proc = start(process.execPath, [join(env.root, 'bench/grpc-app.ts'), '0'], { core: 1, stdout: 'pipe', name: 'grpc-app' })
  return { port: (await firstJsonLine<{ port: number }>(proc, 'grpc-app')).port, proc }
}

export async function startGrpcDirect (app: GrpcApp, driver: 'node' | 'h2load'): Promise<Target> {
  if (driver === 'h2load' && !existsSync(H2LOAD)) throw new TargetSkipped(`${H2LOAD} is not installed (apt-get install nghttp2-client)`)
  return {
    name: driver === 'h2load' ? 'grpc direct (h2load)' : 'grpc direct',
    description: `gRPC unary calls over h2c straight to the grpc-js app (no proxy), from ${driver === 'h2load' ? 'h2load' : 'the node:http2 load generator'}: the floor`,
    origin: `http://127.0.0.1:${app.port}`,
    path: GRPC_PATH,
    tls: false,
    handshakes: 'none',
    procs: [app.proc],
    app: app.proc,
    grpc: { driver, authority: `127.0.0.1:${app.port}` },
    notes: ['"proxy" CPU and RSS are the app\'s own'],
    stop: async () => {}
  }
}

export async function stopGrpcApp (app: GrpcApp | undefined): Promise<void> {
  if (app !== undefined) await stop(app.proc)
}
