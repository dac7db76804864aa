import { mkdtempSync } from 'node:fs'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { Pool } from 'undici'
import { makePki } from '../lib/pki.ts'
import { start, firstJsonLine, killAll } from '../lib/proc.ts'
import { startTwoHop } from '../targets/two-hop.ts'
import { buildGatehouse } from '../lib/build.ts'
const root = join(import.meta.dirname, '../..')
const dir = mkdtempSync(join(tmpdir(), 'rotdiag-'))
process.on('exit', killAll)
const pki = makePki(dir)
const build = buildGatehouse(root, dir)
const app = start(process.execPath, [join(root, 'bench/app.ts'), '0', '--size', '1024'], { core: 1, stdout: 'pipe', name: 'app' })
const appPort = (await firstJsonLine<{ port: number }>(app, 'app')).port
const t = await startTwoHop({ dir, pki, appPort, app, root, cli: build.cli }, { kind: 'ca', leafTtl: process.argv[2] ?? '6s' }, 'rot')
const t0 = performance.now()
const events: Array<[number, string]> = []
t.procs.forEach((p, i) => p.child.stderr!.on('data', (d: Buffer) => { for (const line of d.toString().split('\n')) if (line.includes('"event"')) { const ev = /"event":"([^"]+)"/.exec(line)?.[1]; events.push([performance.now() - t0, `${i === 0 ? 'A' : 'B'} ${ev}`]) } }))
const pool = new Pool(t.origin, { connections: 64 })
const rate = 500; const seconds = 20; const total = rate * seconds
const res: Array<[number, number]> = []
const start0 = performance.now() + 5
let next = 0
await new Promise<void>(resolve => {
  let done = 0
  const tick = (): void => {
    const now = performance.now()
    while (next < total && start0 + next * 1000 / rate <= now) {
      const due = start0 + next * 1000 / rate; next++
      pool.request({ path: t.path, method: 'GET', headers: t.headers }).then(async r => { await r.body.dump(); res.push([due - t0, performance.now() - due]) }, () => { res.push([due - t0, -1]) }).finally(() => { if (++done === total) resolve() })
    }
    if (next < total) setImmediate(tick)
  }
  tick()
})
const slow = res.filter(([, l]) => l > 20 || l < 0).sort((a, b) => a[0] - b[0])
// group slow requests into bursts
let burst: Array<[number, number]> = []
const bursts: string[] = []
for (const s of slow) { if (burst.length > 0 && s[0] - burst.at(-1)![0] > 100) { bursts.push(`${burst[0]![0].toFixed(0)}ms..${burst.at(-1)![0].toFixed(0)}ms: ${burst.length} slow, max ${Math.max(...burst.map(b => b[1])).toFixed(0)} ms`); burst = [] } burst.push(s) }
if (burst.length > 0) bursts.push(`${burst[0]![0].toFixed(0)}ms..${burst.at(-1)![0].toFixed(0)}ms: ${burst.length} slow, max ${Math.max(...burst.map(b => b[1])).toFixed(0)} ms`)
process.stdout.write(`slow bursts:\n${bursts.join('\n')}\nevents:\n${events.filter(e => e[0] > 0).map(e => `${e[0].toFixed(0)}ms ${e[1]}`).join('\n')}\n`)
await t.stop()
process.exit(0)
