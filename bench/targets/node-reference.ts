// Target 2, node-reference: bench/node-reference.ts (node:https requestCert + node:http keep-alive agent).
import { join } from 'node:path'
import type { BenchEnv, Target } from './target.ts'
import { start, stop, firstJsonLine } from '../lib/proc.ts'
import { BENCH_PATH } from '../lib/policy-gen.ts'

export async function startNodeReference (env: BenchEnv): Promise<Target> {
  // GH_BENCH_PROF=DIR profiles it too, to set the sidecar's profile beside it.
  const prof = process.env.GH_BENCH_PROF === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', process.env.GH_BENCH_PROF, '--cpu-prof-name', 'node-reference.cpuprofile']
  const p = start(process.execPath, [...prof, join(env.root, 'bench/node-reference.ts'), '--port', '0', '--upstream-port', String(env.appPort),
    '--cert', env.pki.server.cert, '--key', env.pki.server.key, '--ca', env.pki.bundle], { core: 1, stdout: 'pipe', name: 'node-reference' })
  const { port } = await firstJsonLine<{ port: number }>(p, 'node-reference')
  return {
    name: 'node-reference',
    description: 'minimal Node 24 mTLS proxy: node:https requestCert + node:http keep-alive agent, no policy, no log',
    origin: `https://127.0.0.1:${port}`,
    path: BENCH_PATH,
    tls: true,
    handshakes: 'mtls',
    procs: [p],
    notes: [],
    stop: async () => { await stop(p) }
  }
}
