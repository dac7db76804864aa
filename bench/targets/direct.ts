// Target 1, direct: plain HTTP straight to the app. The floor every other target is compared with.
import type { BenchEnv, Target } from './target.ts'
import { BENCH_PATH } from '../lib/policy-gen.ts'

export async function startDirect (env: BenchEnv): Promise<Target> {
  return {
    name: 'direct',
    description: 'plain HTTP to the app (no proxy): the floor',
    origin: `http://127.0.0.1:${env.appPort}`,
    path: BENCH_PATH,
    tls: false,
    handshakes: 'tcp',
    procs: [env.app],
    notes: ['"proxy" CPU and RSS are the app\'s own'],
    stop: async () => {}
  }
}
