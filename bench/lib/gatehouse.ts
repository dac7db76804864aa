// Starting `gatehouse proxy` (and `gatehouse ca serve`) as bench processes: `node <cli> ...`, where
// cli is the compiled dist/cli.js (bench/lib/build.ts) or src/cli.ts, pinned with the proxy under test, ready when /readyz answers 200, and the counters worth
// recording read back from /metrics.
import { execFileSync } from 'node:child_process'
import { request } from 'undici'
import { start, freePort, type Started } from './proc.ts'
import { sidecarProcessEnv } from '../../src/inject/node-options.ts'

export interface SidecarSpec {
  name: string
  policyFile: string
  trustBundle: string
  upstreamPort: number
  /** Static files, or issued and rotated by the CA. */
  identity: { cert: string, key: string } | { caUrl: string, tokenFile: string }
  routesFile?: string
  /** Opaque TCP app ports served through the inbound listener (--upstream-tcp HOST:PORT). */
  upstreamTcp?: string[]
  decisionLog: string
  /** Node flags for this sidecar, after GH_BENCH_SIDECAR_FLAGS. */
  nodeFlags?: string[]
  /** More `gatehouse proxy` flags (a mode under test, such as --mesh-http1). */
  proxyFlags?: string[]
}

export interface Sidecar {
  proc: Started
  inboundPort: number
  outboundPort: number
  adminPort: number
  /** From spawning `gatehouse proxy` to /readyz 200 (with --ca-url: the first SVID from the CA included). */
  readyMs: number
}

async function readyz (adminPort: number): Promise<boolean> {
  try {
    const r = await request(`http://127.0.0.1:${adminPort}/readyz`)
    await r.body.dump()
    return r.statusCode === 200
  } catch { return false }
}

export async function startSidecar (cli: string, s: SidecarSpec): Promise<Sidecar> {
  const [inboundPort, outboundPort, adminPort] = [await freePort(), await freePort(), await freePort()]
  const identity = 'cert' in s.identity ? ['--cert', s.identity.cert, '--key', s.identity.key] : ['--ca-url', s.identity.caUrl, '--token-file', s.identity.tokenFile]
  // GH_BENCH_PROF=DIR: each sidecar writes a V8 CPU profile there when it exits (open in Chrome DevTools or speedscope).
  // GH_BENCH_SIDECAR_FLAGS="--max-semi-space-size=8 ...": extra Node flags for the sidecars only (experiments).
  const prof = process.env.GH_BENCH_PROF === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', process.env.GH_BENCH_PROF]
  prof.push(...(process.env.GH_BENCH_SIDECAR_FLAGS ?? '').split(' ').filter(f => f !== ''), ...s.nodeFlags ?? [])
  const t0 = performance.now()
  const proc = start(process.execPath, [...prof, cli, 'proxy',
    '--inbound', `127.0.0.1:${inboundPort}`, '--outbound', `127.0.0.1:${outboundPort}`, '--admin', `127.0.0.1:${adminPort}`,
    '--upstream', `127.0.0.1:${s.upstreamPort}`, '--policy', s.policyFile, '--trust-bundle', s.trustBundle, ...identity,
    ...(s.routesFile === undefined ? [] : ['--routes', s.routesFile]),
    ...(s.upstreamTcp ?? []).flatMap(hp => ['--upstream-tcp', hp]),
    '--decision-log', s.decisionLog, '--decision-log-stdout', 'false', ...s.proxyFlags ?? []],
  // NODE_OPTIONS and MALLOC_ARENA_MAX as the injector sets them for the default 256Mi limit (and the image's default).
  { core: 1, name: s.name, env: { ...process.env, GATEHOUSE_LOG_LEVEL: 'info', ...sidecarProcessEnv() } })
  const deadline = Date.now() + 30_000
  while (!await readyz(adminPort)) {
    if (proc.child.exitCode !== null || Date.now() > deadline) {
      proc.child.kill('SIGKILL')
      throw new Error(`${s.name}: not ready (${proc.child.exitCode !== null ? `exited ${proc.child.exitCode}` : 'timeout'}):\n${proc.stderrTail.join('\n')}`)
    }
    await new Promise(resolve => setTimeout(resolve, 25))
  }
  return { proc, inboundPort, outboundPort, adminPort, readyMs: performance.now() - t0 }
}

/** Sums of the counters that show the sidecar did its job: decisions by outcome, decision-log lines by kind, failures. */
export async function scrapeCounters (adminPort: number): Promise<Record<string, number>> {
  const r = await request(`http://127.0.0.1:${adminPort}/metrics`)
  const text = await r.body.text()
  const out: Record<string, number> = {}
  for (const line of text.split('\n')) {
    const m = /^(gatehouse_(?:requests_total|decision_log_lines_total|upstream_errors_total|tls_handshake_failures_total|cert_rotations_total|cert_renewal_failures_total))(\{[^}]*\})? ([\d.e+-]+)$/.exec(line)
    if (m === null) continue
    const label = /decision="(\w+)"|kind="(\w+)"|reason="([\w-]+)"|code="([\w-]+)"/.exec(m[2] ?? '')
    const key = `${m[1]!.replace(/^gatehouse_/, '')}${label === null ? '' : `{${label.slice(1).find(x => x !== undefined) ?? ''}}`}`
    out[key] = (out[key] ?? 0) + Number(m[3])
  }
  return out
}

export async function startCa (cli: string, caDir: string, leafTtl: string): Promise<{ proc: Started, url: string }> {
  const port = await freePort()
  const proc = start(process.execPath, [cli, 'ca', 'serve', '--dir', caDir, '--listen', `127.0.0.1:${port}`, '--leaf-ttl', leafTtl, '--rate-burst', '1000', '--rate-per-minute', '10000'],
    { core: 1, name: 'ca', env: { ...process.env, GATEHOUSE_LOG_LEVEL: 'info' } })
  const deadline = Date.now() + 20_000
  while ((proc.events.get('ca.listening') ?? 0) === 0) {
    if (proc.child.exitCode !== null || Date.now() > deadline) throw new Error(`ca serve did not start:\n${proc.stderrTail.join('\n')}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
  return { proc, url: `https://127.0.0.1:${port}` }
}

/** A single-use join token for `id` (`gatehouse ca token`). */
export function joinToken (cli: string, caDir: string, id: string): string {
  return execFileSync(process.execPath, [cli, 'ca', 'token', '--dir', caDir, '--spiffe-id', id], { encoding: 'utf8' })
}
