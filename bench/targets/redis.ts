// Opaque TCP (issue 17): a redis-server (Debian; no persistence, 127.0.0.1, a random port, pinned to
// core 1 with the proxies) and three paths to it, driven by redis-benchmark (bench/lib/redis.ts):
// - redis direct: straight to redis, the floor;
// - redis stunnel: app -> stunnel (client = yes, the caller's SVID as client certificate) -> TLS 1.3
//   mTLS -> stunnel (verifyChain, requireCert: the bench CA bundle) -> redis; two stunnel4 processes;
// - redis gatehouse two-hop: app -> caller sidecar's tcp route listener -> mTLS (ALPN
//   gatehouse-tcp/1, the callee's SPIFFE ID pinned) -> callee sidecar's inbound listener (policy
//   rule `ports: [<redis port>]`, a decision line per connection to a file) -> --upstream-tcp -> redis.
// Same shape for both tunnels: two processes, the same certificates, TLS 1.3, one TLS connection per
// client connection.
import { existsSync, mkdirSync, writeFileSync, statSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import type { BenchEnv } from './target.ts'
import { TargetSkipped } from './target.ts'
import { start, stop, freePort, waitForTcp, type Started } from '../lib/proc.ts'
import { startSidecar, scrapeCounters } from '../lib/gatehouse.ts'
import { IDS } from '../lib/pki.ts'
import { REDIS_SERVER, redisMissing, type RedisTarget } from '../lib/redis.ts'

export const REDIS_TARGETS = ['redis direct', 'redis stunnel', 'redis gatehouse two-hop'] as const
const STUNNEL = ['/usr/bin/stunnel4', '/usr/bin/stunnel'].find(p => existsSync(p))

export interface RedisApp { port: number, proc: Started }

export async function startRedisApp (env: BenchEnv): Promise<RedisApp> {
  const port = await freePort()
  const proc = start(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', env.dir, '--logfile', ''], { core: 1, name: 'redis-server' })
  await Promise.race([waitForTcp(port, 10_000, 'redis-server'), proc.exited.then(() => { throw new Error(`redis-server exited: ${proc.stderrTail.join('\n')}`) })])
  return { port, proc }
}

export function startRedisDirect (app: RedisApp): RedisTarget {
  return {
    name: 'redis direct',
    description: 'redis-benchmark straight to redis-server (no proxy): the floor',
    port: app.port,
    procs: [app.proc],
    app: app.proc,
    notes: ['"proxy" CPU and RSS are redis\'s own'],
    stop: async () => {}
  }
}

function stunnelVersion (bin: string): string {
  const r = spawnSync(bin, ['-version'], { encoding: 'utf8' })
  return /stunnel [\d.]+/.exec(`${r.stdout}${r.stderr}`)?.[0] ?? 'stunnel'
}

async function startStunnel (bin: string, dir: string, name: string, service: string[], acceptPort: number): Promise<Started> {
  const conf = join(dir, `${name}.conf`)
  writeFileSync(conf, ['foreground = yes', 'pid =', 'syslog = no', 'debug = 3', '', '[redis]', `accept = 127.0.0.1:${acceptPort}`, ...service, 'sslVersionMin = TLSv1.3', ''].join('\n'))
  const p = start(bin, [conf], { core: 1, name })
  try {
    await Promise.race([waitForTcp(acceptPort, 10_000, name), p.exited.then(() => { throw new Error(`exited: ${p.stderrTail.join('\n')}`) })])
  } catch (err) {
    await stop(p)
    throw err
  }
  return p
}

export async function startRedisStunnel (env: BenchEnv, app: RedisApp): Promise<RedisTarget> {
  if (STUNNEL === undefined) throw new TargetSkipped('stunnel4 is not installed (apt-get install stunnel4)')
  const dir = join(env.dir, 'stunnel')
  mkdirSync(dir, { recursive: true })
  const [clientPort, serverPort] = [await freePort(), await freePort()]
  const server = await startStunnel(STUNNEL, dir, 'stunnel-server', [`connect = 127.0.0.1:${app.port}`, `cert = ${env.pki.server.cert}`, `key = ${env.pki.server.key}`, `CAfile = ${env.pki.bundle}`, 'verifyChain = yes', 'requireCert = yes'], serverPort)
  let client: Started
  try {
    client = await startStunnel(STUNNEL, dir, 'stunnel-client', ['client = yes', `connect = 127.0.0.1:${serverPort}`, `cert = ${env.pki.caller.cert}`, `key = ${env.pki.caller.key}`, `CAfile = ${env.pki.bundle}`, 'verifyChain = yes'], clientPort)
  } catch (err) {
    await stop(server)
    throw err
  }
  return {
    name: 'redis stunnel',
    description: `app -> ${stunnelVersion(STUNNEL)} (client = yes, client certificate) -> mTLS, TLS 1.3 -> ${stunnelVersion(STUNNEL)} (verifyChain, requireCert) -> redis; the same SVIDs and CA bundle as the gatehouse pair`,
    port: clientPort,
    procs: [client, server],
    app: app.proc,
    notes: ['CPU is both stunnels together (in brackets: caller side + callee side); RSS is the larger of the two', 'stunnel checks the peer\'s chain, not its SPIFFE ID, and has no policy or decision log'],
    stop: async () => { await Promise.all([stop(client), stop(server)]) }
  }
}

export async function startRedisGatehouse (env: BenchEnv, app: RedisApp): Promise<RedisTarget> {
  const file = (f: string): string => join(env.dir, `redis-${f}`)
  writeFileSync(file('b-policy.yaml'), `version: 1\nmode: enforce\nrules:\n  - name: redis-clients\n    from: [${JSON.stringify(IDS.caller)}]\n    ports: [${app.port}]\n`)
  writeFileSync(file('a-policy.yaml'), 'version: 1\nrules: []\n')
  const decisionLog = file('b-decisions.log')
  const b = await startSidecar(env.cli, { name: 'redis gatehouse B (callee)', policyFile: file('b-policy.yaml'), trustBundle: env.pki.bundle, upstreamPort: env.appPort, upstreamTcp: [`127.0.0.1:${app.port}`], identity: env.pki.server, decisionLog })
  const listen = await freePort()
  writeFileSync(file('a-routes.yaml'), `version: 1\nroutes:\n  - host: cache.internal\n    protocol: tcp\n    listen: 127.0.0.1:${listen}\n    address: 127.0.0.1:${b.inboundPort}\n    id: ${IDS.server}\n    port: ${app.port}\n`)
  let a: Awaited<ReturnType<typeof startSidecar>>
  try {
    a = await startSidecar(env.cli, { name: 'redis gatehouse A (caller)', policyFile: file('a-policy.yaml'), trustBundle: env.pki.bundle, upstreamPort: env.appPort, identity: env.pki.caller, routesFile: file('a-routes.yaml'), decisionLog: file('a-decisions.log') })
    await waitForTcp(listen, 10_000, 'the caller sidecar\'s tcp route listener')
  } catch (err) {
    await stop(b.proc)
    throw err
  }
  return {
    name: 'redis gatehouse two-hop',
    description: `app -> caller sidecar's tcp route listener (routes: protocol tcp) -> mTLS, TLS 1.3, ALPN gatehouse-tcp/1, callee's SPIFFE ID pinned -> callee sidecar inbound (policy rule ports: [${app.port}], decision log to a file) -> --upstream-tcp -> redis`,
    port: listen,
    procs: [a.proc, b.proc],
    app: app.proc,
    notes: ['CPU is both sidecars together (in brackets: A + B); RSS is the larger of the two'],
    inspect: async () => ({ metricsB: await scrapeCounters(b.adminPort), decisionLogBytes: statSync(decisionLog).size }),
    stop: async () => { await Promise.all([stop(a.proc, 15_000), stop(b.proc, 15_000)]) }
  }
}

/**
 * The three paths, to start with bench/run.ts's other targets: redis-server is started with the
 * first of them (a missing redis-server or redis-benchmark skips them all, with the reason); `stop`
 * stops it once the targets are stopped.
 */
export function redisStarters (env: BenchEnv): { list: Array<[typeof REDIS_TARGETS[number], () => Promise<RedisTarget>]>, stop: () => Promise<void> } {
  let app: Promise<RedisApp> | undefined
  const redis = async (): Promise<RedisApp> => {
    const missing = redisMissing()
    if (missing !== undefined) throw new TargetSkipped(missing)
    return await (app ??= startRedisApp(env))
  }
  return {
    list: [
      ['redis direct', async () => startRedisDirect(await redis())],
      ['redis stunnel', async () => await startRedisStunnel(env, await redis())],
      ['redis gatehouse two-hop', async () => await startRedisGatehouse(env, await redis())]
    ],
    stop: async () => { const a = await app?.catch(() => undefined); if (a !== undefined) await stop(a.proc) }
  }
}
