// bench/rotation-timeline: where in time the slow requests of a rotation run fall, next to the
// moments each sidecar rotated. The two-hop path with CA-issued SVIDs (as in `npm run bench`'s
// rotation measurement), an open-model load from this process, and every request's due time and
// latency kept; requests slower than --slow-ms are grouped into bursts and printed with the
// identity.rotated events of sidecar A (outbound) and B (inbound). Then one summary line: failed
// requests, the cold start's p99 (requests due in the first --cold-seconds, as bench/measure/
// rotation.ts reports it) and the p99 of the rest, with the rotations each sidecar made.
//   node bench/rotation-timeline.ts [--leaf-ttl 6s --rate 500 --seconds 20 --slow-ms 20 --cold-seconds 3]
import { mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'
import { makePki } from './lib/pki.ts'
import { start, firstJsonLine, killAll } from './lib/proc.ts'
import { buildGatehouse } from './lib/build.ts'
import { startTwoHop } from './targets/two-hop.ts'

const arg = (name: string, dflt: string): string => { const i = process.argv.indexOf(`--${name}`); return i === -1 ? dflt : process.argv[i + 1]! }
const leafTtl = arg('leaf-ttl', '6s')
const rate = Number(arg('rate', '500'))
const seconds = Number(arg('seconds', '20'))
const slowMs = Number(arg('slow-ms', '20'))
const coldSeconds = Number(arg('cold-seconds', '3'))
const root = fileURLToPath(new URL('..', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'gh-bench-rotation-'))
process.on('exit', () => { killAll(); rmSync(dir, { recursive: true, force: true }) })

const pki = makePki(dir)
const build = buildGatehouse(root, dir)
const app = start(process.execPath, [join(root, 'bench/app.ts'), '0', '--size', '1024'], { core: 1, stdout: 'pipe', name: 'app' })
const appPort = (await firstJsonLine<{ port: number }>(app, 'app')).port
const mesh = await startTwoHop({ dir, pki, appPort, app, root, cli: build.cli }, { kind: 'ca', leafTtl }, 'rotation')

const t0 = performance.now()
const events: Array<{ at: number, what: string }> = []
mesh.procs.forEach((p, i) => {
  p.child.stderr!.on('data', (d: Buffer) => {
    for (const m of d.toString().matchAll(/"event":"(identity\.[a-z_]+)"/g)) events.push({ at: performance.now() - t0, what: `${i === 0 ? 'A (outbound)' : 'B (inbound)'} ${m[1]!}` })
  })
})
const pool = new Pool(mesh.origin, { connections: 64 })
const total = rate * seconds
const samples: Array<{ due: number, ms: number }> = []
const begin = performance.now() + 5
let next = 0
await new Promise<void>((resolve) => {
  let settled = 0
  const tick = (): void => {
    const now = performance.now()
    while (next < total && begin + next * 1000 / rate <= now) {
      const due = begin + next++ * 1000 / rate
      pool.request({ path: mesh.path, method: 'GET', ...(mesh.headers === undefined ? {} : { headers: mesh.headers }) })
        .then(async (r) => { await r.body.dump(); samples.push({ due: due - t0, ms: r.statusCode === 200 ? performance.now() - due : -1 }) }, () => { samples.push({ due: due - t0, ms: -1 }) })
        .finally(() => { if (++settled === total) resolve() })
    }
    if (next < total) setImmediate(tick)
  }
  tick()
})

const slow = samples.filter(s => s.ms < 0 || s.ms > slowMs).sort((a, b) => a.due - b.due)
const bursts: Array<{ from: number, to: number, n: number, max: number, failed: number }> = []
for (const s of slow) {
  const b = bursts.at(-1)
  if (b !== undefined && s.due - b.to <= 100) { b.to = s.due; b.n++; b.max = Math.max(b.max, s.ms); if (s.ms < 0) b.failed++ } else bursts.push({ from: s.due, to: s.due, n: 1, max: s.ms, failed: s.ms < 0 ? 1 : 0 })
}
const lines = [
  ...bursts.map(b => ({ at: b.from, text: `  slow: ${b.n} requests due ${b.from.toFixed(0)}..${b.to.toFixed(0)} ms, max ${b.max.toFixed(0)} ms${b.failed > 0 ? `, ${b.failed} failed` : ''}` })),
  ...events.map(e => ({ at: e.at, text: `${e.what} at ${e.at.toFixed(0)} ms` }))
].sort((a, b) => a.at - b.at)
process.stdout.write(`rotation timeline: ${rate} req/s for ${seconds} s, leaf TTL ${leafTtl}; ${slow.length} of ${total} requests slower than ${slowMs} ms (latency from the due time)\n${lines.map(l => l.text).join('\n')}\n`)
const coldEnd = begin - t0 + coldSeconds * 1000
const p99 = (xs: number[]): string => { const s = xs.sort((a, b) => a - b); return s.length === 0 ? 'n/a' : `${s[Math.min(s.length - 1, Math.floor(s.length * 0.99))]!.toFixed(1)} ms` }
const ok = samples.filter(s => s.ms >= 0)
const rotated = (who: string): number => events.filter(e => e.what === `${who} identity.rotated`).length
process.stdout.write(`summary: ${samples.length - ok.length} failed of ${samples.length}; cold start (due in the first ${coldSeconds} s) p99 ${p99(ok.filter(s => s.due < coldEnd).map(s => s.ms))}; after it p99 ${p99(ok.filter(s => s.due >= coldEnd).map(s => s.ms))}; rotations: A (outbound) ${rotated('A (outbound)')}, B (inbound) ${rotated('B (inbound)')}\n`)
await pool.close()
await mesh.stop()
process.exit(0)
