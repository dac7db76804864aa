import { loadConfig, type Schema } from '../config.ts'
import { runDemo } from '../demo/run.ts'
import { checkDirArg } from './check.ts'
import type { Runner } from './runner.ts'

export const demoSchema = {
  'keep-running': { kind: 'bool', default: false, help: 'leave the mesh up (and print curl commands) until Ctrl-C' },
  dir: { kind: 'string', help: 'keep the demo files here instead of a temporary folder' },
  'leaf-ttl': { kind: 'duration', default: '8s', min: 2000, help: 'certificate lifetime (short, so a rotation happens during the demo)' }
} as const satisfies Schema

export const demo: Runner = async (argv, io) => {
  const c = loadConfig('demo', demoSchema, { argv, maxPositionals: 0 })
  if (c.dir !== undefined) checkDirArg('--dir', c.dir)
  const r = await runDemo({ out: io.out, keepRunning: c.keepRunning, leafTtlMs: c.leafTtl, ...(c.dir === undefined ? {} : { dir: c.dir }) })
  const failed = r.steps.filter(s => !s.ok)
  io.out(failed.length === 0 && r.verify.break === undefined ? `All ${r.steps.length} steps behaved as expected.\n` : `${failed.length} step(s) did not behave as expected: ${failed.map(s => s.name).join('; ')}\n`)
  return failed.length === 0 && r.verify.break === undefined ? 0 : 1
}
