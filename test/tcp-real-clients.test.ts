import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { chownSync, existsSync, readdirSync, appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { Pki, startWorkload, type Tap, type Workload } from './helpers/mesh.ts'
import { closedPort, openTcp, readAll } from './helpers/outbound-mesh.ts'
import { startProcess, needsTool } from './helpers/process.ts'
import { waitFor } from './helpers/wait.ts'
import { replaceFile, tempDir } from './helpers/files.ts'

// Opaque TCP with servers and clients nobody here wrote (issue 17): redis-server behind one
// sidecar, redis-cli / redis-benchmark through another's route listener; postgres behind one, psql
// and pgbench through the other. An unauthorized identity is refused and a policy edit cuts a live
// connection. The sidecars run in this process, so every client runs asynchronously.

const run = promisify(execFile)
const dir = tempDir(t)
const pki = new Pki(dir)
const TD = pki.ca.trustDomain
const CLIENT = `spiffe://${TD}/ns/shop/sa/checkout`
const STRANGER = `spiffe://${TD}/ns/shop/sa/stranger`

const policyFor = (port: number, from: string): string => `version: 1\nrules:\n  - name: db-clients\n    from: ["${from}"]\n    ports: [${port}]\n`

/** The callee (server) sidecar and one caller sidecar per identity, each with a tcp route to it. */
async function mesh (t: Tap, name: string, serverId: string, appPort: number): Promise<{ server: Workload, listen: (callerId: string) => Promise<number> }> {
  const server = await startWorkload(t, { pki, name: `${name}-server`, id: serverId, policy: policyFor(appPort, CLIENT), sidecar: { tcpUpstreams: new Map([[appPort, { host: '127.0.0.1', port: appPort }]]) } })
  const listen = async (callerId: string): Promise<number> => {
    const caller = await startWorkload(t, {
      pki,
      name: `${name}-${callerId.split('/').pop()!}`,
      id: callerId,
      routes: `version: 1\nroutes:\n  - host: ${name}.internal\n    protocol: tcp\n    listen: 127.0.0.1:0\n    address: ${server.inboundAddress}\n    id: ${serverId}\n    port: ${appPort}\n`
    })
    return caller.sidecar.outbound!.routeListeners.port({ host: '127.0.0.1', port: 0 })!
  }
  return { server, listen }
}


t.test('redis-server behind a sidecar: redis-cli and redis-benchmark through two', { skip: needsTool('redis-server', 'redis-server') || needsTool('redis-benchmark', 'redis-tools') }, async t => {
  const port = await closedPort()
  await startProcess(t, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], /Ready to accept connections/)
  const { server, listen } = await mesh(t, 'redis', `spiffe://${TD}/ns/cache/sa/redis`, port)
  const via = await listen(CLIENT)
  t.equal((await run('redis-cli', ['-p', String(via), 'SET', 'order:1', 'paid'])).stdout.trim(), 'OK')
  t.equal((await run('redis-cli', ['-p', String(via), 'GET', 'order:1'])).stdout.trim(), 'paid', 'redis-cli through two sidecars')
  const bench = await run('redis-benchmark', ['-p', String(via), '-n', '2000', '-c', '4', '-t', 'set,get', '-q'])
  t.match(bench.stdout, /SET: .*requests per second[\s\S]*GET: .*requests per second/, 'redis-benchmark completes')

  const stranger = await listen(STRANGER)
  const refused = await run('redis-cli', ['-p', String(stranger), 'GET', 'order:1']).then(r => r.stdout, (e: { stdout?: string, stderr?: string }) => `${e.stdout ?? ''}${e.stderr ?? ''}`)
  t.notMatch(refused, /paid/, `another identity gets nothing: ${refused.trim()}`)
  await waitFor(() => server.decisions.some(d => d.caller === STRANGER), 5000, 'the stranger\'s deny line')
  t.match(server.decisions.find(d => d.caller === STRANGER), { kind: 'tcp', decision: 'deny', reason: 'no-matching-rule', port })

  // A live connection (a client's pool) speaking RESP; the policy stops allowing it.
  const live = await openTcp(via)
  live.write('PING\r\n')
  const pong = await new Promise<string>(resolve => live.once('data', (c: Buffer) => { resolve(c.toString()) }))
  t.equal(pong, '+PONG\r\n')
  const ended = readAll(live, 10_000)
  replaceFile(server.policyFile, policyFor(port, STRANGER))
  await ended
  await waitFor(() => server.decisions.some(d => d.closeReason === 'policy-revoked'), 5000, 'the close line')
  t.pass('a policy edit cut the live connection, and its close line says policy-revoked')
})

/** Debian's postgres binaries are not on the PATH: /usr/lib/postgresql/<version>/bin. */
function postgresBin (): string | undefined {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return undefined
  const v = readdirSync(root).filter(d => existsSync(join(root, d, 'bin', 'postgres'))).sort().pop()
  return v === undefined ? undefined : join(root, v, 'bin')
}
const pgMissing = (): string | false => {
  if (postgresBin() !== undefined && needsTool('psql', 'postgresql-client') === false) return false
  if (process.env.CI === 'true') throw new Error('postgres is missing under CI: .ci/run must install the Debian package postgresql')
  return 'postgres is not installed (Debian package postgresql; .ci/run installs it)'
}

t.test('postgres behind a sidecar: psql and pgbench through two', { skip: pgMissing() }, async t => {
  const bin = postgresBin()!
  const data = join(tempDir(t, 'gh-pg-'), 'data')
  // initdb and postgres refuse to run as root: as root, run them as Debian's postgres user.
  const asPostgres = process.getuid?.() === 0 ? (cmd: string, args: string[]): [string, string[]] => ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : (cmd: string, args: string[]): [string, string[]] => [cmd, args]
  if (process.getuid?.() === 0) chownSync(join(data, '..'), 101, 104)
  await run(...asPostgres(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']))
  appendFileSync(join(data, 'postgresql.conf'), '\nfsync = off\n')
  const port = await closedPort()
  await startProcess(t, ...asPostgres(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', data, '-c', 'listen_addresses=127.0.0.1']), /ready to accept connections/, { ms: 30_000 })
  const { server, listen } = await mesh(t, 'pg', `spiffe://${TD}/ns/db/sa/postgres`, port)
  const via = await listen(CLIENT)
  const psql = async (sql: string, p = via): Promise<string> => (await run('psql', ['-h', '127.0.0.1', '-p', String(p), '-U', 'postgres', '-At', '-c', sql], { env: { ...process.env, PGCONNECT_TIMEOUT: '5' } })).stdout.trim()
  t.equal(await psql('select 6 * 7'), '42', 'psql through two sidecars')
  await run(join(bin, 'pgbench'), ['-h', '127.0.0.1', '-p', String(via), '-U', 'postgres', '-i', '-s', '1', '-q', 'postgres'])
  const bench = await run(join(bin, 'pgbench'), ['-h', '127.0.0.1', '-p', String(via), '-U', 'postgres', '-c', '2', '-t', '50', 'postgres'])
  t.match(bench.stdout, /number of transactions actually processed: 100\/100/, 'pgbench: every transaction went through')

  const stranger = await listen(STRANGER)
  await t.rejects(psql('select 1', stranger), 'psql as another identity fails')
  await waitFor(() => server.decisions.some(d => d.caller === STRANGER), 5000, 'the deny line')
  const closes = server.decisions.filter(d => d.kind === 'tcp' && d.caller === CLIENT)
  t.ok(closes.length >= 4 && closes.every(d => d.closeReason === 'closed' && d.bytesIn > 0 && d.bytesOut > 0), `${closes.length} client connections, each with its close line and bytes both ways`)
})
