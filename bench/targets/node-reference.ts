// Target 2, node-reference: bench/node-reference.ts (node:https requestCert + node:http keep-alive agent);
// and the opt-in experiment lean-reference (bench/lean-reference.ts: the same TLS, no node:http streams).
import { join } from 'node:path'
import type { BenchEnv, Target } from './target.ts'
import { start, stop, firstJsonLine } from '../lib/proc.ts'
import { BENCH_PATH } from '../lib/policy-gen.ts'

export async function startNodeReference (env: BenchEnv, variant: 'node-reference' | 'lean-reference' = 'node-reference'): Promise<Target> {
  // GH_BENCH_PROF=DIR profiles it too, to set the sidecar's profile beside it.
  const prof = process.env.GH_BENCH_PROF === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', process.env.GH_BENCH_PROF, '--cpu-prof-name', `${variant}.cpuprofile`]
  const p = start(process.execPath, [...prof, join(env.root, `bench/${variant}.ts`), '--port', '0', '--upstream-port', String(env.appPort),
    '--cert', env.pki.server.cert, '--key', env.pki.server.key, '--ca', env.pki.bundle], { core: 1, stdout: 'pipe', name: variant })
  const { port } = await firstJsonLine<{ port: number }>(p, variant)
  return {
    name: variant,
    description: variant === 'node-reference'
      ? 'minimal Node 24 mTLS proxy: node:https requestCert + node:http keep-alive agent, no policy, no log'
      : 'experiment: node:tls requestCert + Node\'s llhttp binding on both sides, no node:http streams, no policy, no log (opt-in: --only lean-reference)',
    origin: `https://127.0.0.1:${port}`,
    path: BENCH_PATH,
    tls: true,
    handshakes: 'mtls',
    procs: [p],
    notes: [],
    stop: async () => { await stop(p) }
  }
}
