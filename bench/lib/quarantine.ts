// Quarantine propagation (docs/quarantine.md, "The bound"), in one process: a CA (startCaServer on
// 127.0.0.1, its directory from initCa) and three sidecars with CA-issued SVIDs: caller A, whose
// routes send b.internal and c.internal to callees B and C, whose policies allow A. A's app calls B
// and C continuously, each over two paths: through A's outbound listener as an HTTP proxy (undici
// ProxyAgent, proxyTunnel false, as an app with HTTP_PROXY does), and directly with an SVID for A
// issued offline (HTTP/1.1 keep-alive, one connection per callee: a stolen key). Then, `runs` times:
// quarantine A (editQuarantine, what `gatehouse ca quarantine add` does), take for each callee the
// time from the add to the last 200 it answered A on either path, wait until every path is denied,
// remove A, and wait until every path is served again.
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { Agent, ProxyAgent, request, type Dispatcher } from 'undici'
import { initCa, loadCa, FILES } from '../../src/ca/ca-directory.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { Attestor } from '../../src/ca/attest.ts'
import { JoinTokenVerifier, UsedTokenLog, mintJoinToken } from '../../src/ca/join-token.ts'
import { RateLimiter } from '../../src/ca/rate-limit.ts'
import { startCaServer } from '../../src/ca/ca-server.ts'
import { editQuarantine, QUARANTINE_POLL_MS } from '../../src/ca/quarantine-book.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { generateKey } from '../../src/x509/keys.ts'
import { startSidecar, type Sidecar } from '../../src/proxy/sidecar.ts'

const TD = 'bench.local'
const A_ID = `spiffe://${TD}/ns/a/sa/caller`
const CALLEES = { b: `spiffe://${TD}/ns/b/sa/server`, c: `spiffe://${TD}/ns/c/sa/server` } as const
type Callee = keyof typeof CALLEES
/** Each path sends its next request this long after the previous one was answered. */
const GAP_MS = 10
const TIMEOUT_MS = 15_000

export interface Stats { min: number, median: number, p95: number, max: number }
export interface QuarantineResult {
  date: string
  runs: number
  machine: { cpu: string, cores: number, node: string }
  method: string
  /** Per callee, per run: ms from the add to the last 200 it answered A (0 if none after the add). */
  samples: Record<Callee, number[]>
  /** Per run, the later of the two callees: A cut off everywhere. */
  everywhere: number[]
  stats: Record<Callee | 'everywhere', Stats>
  /** Per run, ms from the remove until every path was served again. */
  restoreMs: number[]
  /** Paths that answered 200 again after every path had been denied, before the remove (expected 0). */
  servedAfterDenied: number
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
async function until (check: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + TIMEOUT_MS
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${TIMEOUT_MS} ms waiting for ${what}`)
    await sleep(5)
  }
}

/** Nearest-rank quantile of an ascending list. */
const rank = (sorted: number[], p: number): number => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!
export function stats (xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b)
  return { min: s[0]!, median: rank(s, 0.5), p95: rank(s, 0.95), max: s.at(-1)! }
}

interface Mesh { caDir: string, a: Sidecar, callees: Record<Callee, Sidecar>, direct: { chainPem: string, keyPem: string }, stop: () => Promise<void> }

async function startMesh (dir: string): Promise<Mesh> {
  const caDir = join(dir, 'ca')
  initCa({ dir: caDir, trustDomain: TD })
  const ca = loadCa(caDir)
  const logger = pino({ level: 'warn' }, pino.destination({ dest: join(dir, 'gatehouse.log'), sync: true }))
  const stops: Array<() => Promise<void>> = []
  // Leaves of an hour: no renewal (which the CA refuses a quarantined A) during the runs.
  const caServer = await startCaServer({
    ca,
    issuer: new Issuer(ca, { defaultTtlMs: 3_600_000 }),
    attestor: new Attestor({ join: new JoinTokenVerifier({ tokenKey: ca.tokenKey, trustDomain: TD, used: new UsedTokenLog(join(caDir, FILES.usedTokens)) }) }),
    limiter: new RateLimiter({ burst: 100, perMinute: 600 }),
    logger,
    listen: { host: '127.0.0.1', port: 0 }
  })
  stops.push(caServer.close)
  const app: Server = createServer((req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-length': 2 }).end('ok') }) })
  await new Promise<void>(resolve => app.listen(0, '127.0.0.1', resolve))
  stops.push(async () => { app.closeAllConnections(); await new Promise(resolve => app.close(resolve)) })
  const sidecar = async (name: string, id: string, policy: string, routes: string): Promise<Sidecar> => {
    const file = (suffix: string): string => join(dir, `${name}-${suffix}`)
    writeFileSync(file('token'), await mintJoinToken({ tokenKey: ca.tokenKey, trustDomain: TD, id: SpiffeId.parse(id), ttlMs: 600_000 }), { mode: 0o600 })
    writeFileSync(file('policy.yaml'), policy)
    writeFileSync(file('routes.yaml'), routes)
    const s = await startSidecar({
      inbound: { host: '127.0.0.1', port: 0 }, outbound: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: (app.address() as AddressInfo).port },
      policyFile: file('policy.yaml'), routesFile: file('routes.yaml'), trustBundleFile: join(caDir, FILES.bundle), ca: { url: `https://127.0.0.1:${caServer.port}`, tokenFile: file('token') },
      reloadIntervalMs: 200, tlsMinVersion: 'TLSv1.3', handshakeTimeoutMs: 5000, headersTimeoutMs: 5000, requestTimeoutMs: 30_000, idleTimeoutMs: 30_000, maxHeaderSize: 16384,
      maxConnections: 1000, upstreamTimeoutMs: 5000, upstreamConnectTimeoutMs: 1000, logger, decisionLogFile: file('decisions.log'), decisionLogStdout: false
    })
    stops.push(async () => { await s.stop(100) })
    return s
  }
  const allowA = `version: 1\nrules:\n  - name: a\n    from: ["${A_ID}"]\n`
  const callees = { b: await sidecar('b', CALLEES.b, allowA, 'version: 1\nroutes: []\n'), c: await sidecar('c', CALLEES.c, allowA, 'version: 1\nroutes: []\n') }
  const routes = `version: 1\nroutes:\n${Object.entries(callees).map(([name, s]) => `  - host: ${name}.internal\n    address: 127.0.0.1:${s.inbound.port}\n    id: ${CALLEES[name as Callee]}\n`).join('')}`
  const a = await sidecar('a', A_ID, 'version: 1\nrules: []\n', routes)
  const key = generateKey('ec-p256')
  const svid = new Issuer(ca).issue({ id: SpiffeId.parse(A_ID), publicKey: key.publicKey, ttlMs: 3_600_000 })
  return {
    caDir,
    a,
    callees,
    direct: { chainPem: svid.chainPem, keyPem: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
    stop: async () => { for (const s of stops.reverse()) await s().catch(() => {}) }
  }
}

/** One path from A to a callee, calling it until stopped: when it last got a 200, and whether it is denied now. */
class Path {
  lastOk = 0
  denied = false
  private running = true
  readonly callee: Callee
  readonly done: Promise<void>
  constructor (callee: Callee, url: string, dispatcher: Dispatcher) {
    this.callee = callee
    this.done = (async () => {
      while (this.running) {
        let ok = false
        try {
          const r = await request(url, { dispatcher, headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS })
          await r.body.text()
          ok = r.statusCode === 200
        } catch { /* a connection closed by the callee: denied */ }
        if (ok) { this.lastOk = performance.now(); this.denied = false } else this.denied = true
        await sleep(GAP_MS)
      }
    })()
  }

  stop (): Promise<void> { this.running = false; return this.done }
}

export async function measureQuarantine (opts: { runs: number }, log: (s: string) => void): Promise<QuarantineResult> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-quarantine-'))
  const mesh = await startMesh(dir)
  const viaA = new ProxyAgent({ uri: `http://127.0.0.1:${mesh.a.outbound!.port}`, proxyTunnel: false })
  const direct = new Agent({ connect: { cert: mesh.direct.chainPem, key: mesh.direct.keyPem, rejectUnauthorized: false }, connections: 1, keepAliveTimeout: 60_000 })
  const paths = (Object.keys(CALLEES) as Callee[]).flatMap(c => [
    new Path(c, `http://${c}.internal/orders`, viaA),
    new Path(c, `https://127.0.0.1:${mesh.callees[c].inbound.port}/orders`, direct)
  ])
  const samples: Record<Callee, number[]> = { b: [], c: [] }
  const everywhere: number[] = []
  const restoreMs: number[] = []
  let servedAfterDenied = 0
  try {
    await until(() => paths.every(p => p.lastOk > 0 && !p.denied), 'every path to be served')
    log(`  ${opts.runs} runs (quarantine A, last 200 at B and C, remove) `)
    for (let run = 0; run < opts.runs; run++) {
      const added = performance.now()
      editQuarantine(mesh.caDir, entries => [...entries, { id: A_ID, reason: `bench run ${run + 1}`, added: new Date().toISOString(), by: 'bench' }])
      await until(() => paths.every(p => p.denied), 'every path to be denied')
      // A 200 answered after this would still count (and be a flap): give late ones the time to show.
      const deniedAt = performance.now()
      await sleep(300)
      servedAfterDenied += paths.filter(p => p.lastOk > deniedAt).length
      const per = { b: 0, c: 0 }
      for (const p of paths) per[p.callee] = Math.max(per[p.callee], p.lastOk - added)
      for (const c of Object.keys(per) as Callee[]) samples[c].push(Math.max(0, per[c]))
      everywhere.push(Math.max(0, per.b, per.c))
      const removed = performance.now()
      editQuarantine(mesh.caDir, entries => entries.filter(e => e.id !== A_ID))
      await until(() => paths.every(p => p.lastOk > removed && !p.denied), 'every path to be served again')
      restoreMs.push(performance.now() - removed)
      log('.')
      await sleep(200)
    }
    log(' done\n')
  } finally {
    await Promise.all(paths.map(async p => { await p.stop() }))
    await viaA.destroy()
    await direct.destroy()
    await mesh.stop()
    rmSync(dir, { recursive: true, force: true })
  }
  const round = (xs: number[]): number[] => xs.map(x => Math.round(x * 10) / 10)
  return {
    date: new Date().toISOString(),
    runs: opts.runs,
    machine: { cpu: cpus()[0]?.model.trim() ?? 'unknown CPU', cores: cpus().length, node: process.versions.node },
    method: `in-process CA (file poll ${QUARANTINE_POLL_MS} ms) and sidecars A, B, C; A calls B and C over 2 paths each (through its sidecar, and directly with its SVID over HTTP/1.1 keep-alive), one request at a time per path, ${GAP_MS} ms apart; ms from editQuarantine(add) to the last 200 each callee answered A (at the client)`,
    samples: { b: round(samples.b), c: round(samples.c) },
    everywhere: round(everywhere),
    stats: { b: stats(round(samples.b)), c: stats(round(samples.c)), everywhere: stats(round(everywhere)) },
    restoreMs: round(restoreMs),
    servedAfterDenied
  }
}

/** The table printed by bench/quarantine.ts and `npm run bench -- --only quarantine`. */
export function formatQuarantine (r: QuarantineResult): string {
  const row = (name: string, s: Stats): string => `| ${name} | ${s.min.toFixed(0)} | ${s.median.toFixed(0)} | ${s.p95.toFixed(0)} | ${s.max.toFixed(0)} |`
  return [
    `Quarantine: ms from \`quarantine add\` to the last request served, ${r.runs} runs`,
    '',
    '| callee | min | median | p95 | max |',
    '|---|---:|---:|---:|---:|',
    row('B', r.stats.b), row('C', r.stats.c), row('both (A cut off everywhere)', r.stats.everywhere),
    '',
    `remove to served again: median ${stats(r.restoreMs).median.toFixed(0)} ms, max ${stats(r.restoreMs).max.toFixed(0)} ms; served again before the remove: ${r.servedAfterDenied}`,
    ''
  ].join('\n')
}

export function writeQuarantineResults (resultsDir: string, r: QuarantineResult): string {
  mkdirSync(resultsDir, { recursive: true })
  const file = join(resultsDir, 'quarantine.json')
  writeFileSync(file, `${JSON.stringify(r, null, 2)}\n`)
  return file
}
