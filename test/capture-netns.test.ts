import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { connect } from 'node:net'
import { cliPath } from './helpers/run-cli.ts'

// gatehouse.io/capture: iptables, for real: a network namespace stands in for a pod (a veth pair
// links it to the host, as a CNI would), an "app" and a "sidecar" listen inside it, and
// `gatehouse capture iptables` is run inside it, as the init container would be. Then a connection
// from outside to the app's port must land on the sidecar, while the pod's own loopback and the
// excluded ports are left alone. Needs root, `ip` (iproute2) and iptables.

const node = process.execPath
const pid = process.pid
const ns = `gh-cap-${pid}`
const hostIf = `ghc${pid % 100000}h`
const podIf = `ghc${pid % 100000}p`
const subnet = `10.213.${pid % 250}`
const hostIp = `${subnet}.1`
const podIp = `${subnet}.2`

const run = (cmd: string, args: string[], timeout = 30_000): { status: number | null, stdout: string, stderr: string } => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout })
  return { status: r.error !== undefined ? -1 : r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error?.message ?? '') }
}
const have = (cmd: string): boolean => run('sh', ['-c', `command -v ${cmd}`]).status === 0

/** Installs the tools with apt-get when they are missing (root only): the project's machines are fresh. */
function ensureTools (): string | undefined {
  const missing = (): string[] => ['ip', 'iptables', 'iptables-restore', 'ip6tables-restore'].filter(c => !have(c))
  if (missing().length === 0) return undefined
  if (!have('apt-get')) return `missing ${missing().join(', ')} and no apt-get to install them`
  const install = (): number | null => run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'iptables', 'iproute2'], 300_000).status
  if (install() !== 0) { run('apt-get', ['update', '-qq'], 300_000); install() }
  return missing().length === 0 ? undefined : `missing ${missing().join(', ')} (apt-get install iptables iproute2 failed)`
}

const isRoot = process.getuid?.() === 0
const toolProblem = isRoot ? ensureTools() : 'not root'
const netnsProblem = toolProblem !== undefined ? undefined : (() => {
  const r = run('ip', ['netns', 'add', ns])
  return r.status === 0 ? undefined : `ip netns add is not permitted here: ${r.stderr.trim()}`
})()
const skip = toolProblem ?? netnsProblem

const children: ChildProcess[] = []
t.teardown(() => {
  // Always, whatever failed: the listeners, then the namespace (which takes the veth pair with it).
  for (const c of children) { if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL') }
  if (skip === undefined) {
    run('ip', ['netns', 'del', ns])
    run('ip', ['link', 'del', hostIf]) // normally gone with the namespace already
  }
})

/** A TCP listener inside the namespace that answers every connection with its name. */
async function listen (name: string, host: string, port: number): Promise<void> {
  const script = `require('node:net').createServer(s => { s.end(process.argv[1] + '\\n') }).listen(Number(process.argv[3]), process.argv[2], () => { process.stdout.write('ready\\n') })`
  const child = spawn('ip', ['netns', 'exec', ns, node, '-e', script, name, host, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  await new Promise<void>((resolve, reject) => {
    let err = ''
    child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
    child.stdout?.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve() })
    child.on('exit', code => { reject(new Error(`${name} listener exited (${String(code)}): ${err}`)) })
    setTimeout(() => { reject(new Error(`${name} listener not ready: ${err}`)) }, 10_000).unref()
  })
}

/** Connects from the host's namespace and returns the first line the server sends. */
async function ask (host: string, port: number): Promise<string> {
  return await new Promise((resolve, reject) => {
    let data = ''
    const s = connect({ host, port, timeout: 3000 })
    s.on('data', d => { data += d.toString() })
    s.on('end', () => { resolve(data.trim()) })
    s.on('timeout', () => { s.destroy(); reject(new Error(`timeout connecting to ${host}:${port}`)) })
    s.on('error', reject)
  })
}

/** The same, from inside the pod's namespace. */
function askFromPod (host: string, port: number): string {
  const script = `const s = require('node:net').connect(Number(process.argv[2]), process.argv[1]); let d = ''; s.on('data', c => { d += c }); s.on('end', () => { process.stdout.write(d.trim()) }); s.on('error', e => { process.stdout.write('error ' + e.code) })`
  return run('ip', ['netns', 'exec', ns, node, '-e', script, host, String(port)]).stdout
}

const capture = (...args: string[]): ReturnType<typeof run> => run('ip', ['netns', 'exec', ns, node, cliPath, 'capture', 'iptables', ...args])

t.test('inbound TCP to the app port lands on the sidecar; loopback and excluded ports do not', { skip: skip === undefined ? false : `capture-netns skipped: ${skip}` }, async t => {
  const setup = [
    ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', podIf],
    ['link', 'set', podIf, 'netns', ns],
    ['addr', 'add', `${hostIp}/30`, 'dev', hostIf],
    ['link', 'set', hostIf, 'up'],
    ['netns', 'exec', ns, 'ip', 'addr', 'add', `${podIp}/30`, 'dev', podIf],
    ['netns', 'exec', ns, 'ip', 'link', 'set', podIf, 'up'],
    ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']
  ]
  for (const args of setup) {
    const r = run('ip', args)
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`)
  }

  // The pod: an app on 8080 (all interfaces, the case capture exists for), the sidecar's inbound
  // port and admin port, and a metrics port the owner excludes from capture.
  await listen('app', '0.0.0.0', 8080)
  await listen('sidecar', '0.0.0.0', 15006)
  await listen('admin', '0.0.0.0', 15020)
  await listen('metrics', '0.0.0.0', 9090)

  t.equal(await ask(podIp, 8080), 'app', 'before capture, the app port reaches the app')

  const dry = capture('--dry-run', '--exclude-ports', '9090', '--ipv6', 'off')
  const first = capture('--exclude-ports', '9090')
  t.equal(first.status, 0, `capture applied: ${first.stderr}`)
  t.match(first.stdout, /ipv4: inbound TCP redirected to port 15006\n/)
  const rules = run('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-S']).stdout
  t.match(rules, /-A PREROUTING -p tcp -j GATEHOUSE_INBOUND/)
  t.match(rules, /-A GATEHOUSE_INBOUND -p tcp -j REDIRECT --to-ports 15006/)
  t.match(dry.stdout, /-A GATEHOUSE_INBOUND -p tcp --dport 9090 -j RETURN/, 'the dry run prints what is applied')

  t.equal(await ask(podIp, 8080), 'sidecar', 'host -> pod:8080 (the app port) lands on the sidecar')
  t.equal(await ask(podIp, 4242), 'sidecar', 'any other inbound port too (nothing listens on 4242)')
  t.equal(await ask(podIp, 15006), 'sidecar', 'the inbound port itself')
  t.equal(await ask(podIp, 15020), 'admin', 'the admin port (kubelet probes) is not captured')
  t.equal(await ask(podIp, 9090), 'metrics', 'an excluded port is not captured')

  t.equal(askFromPod('127.0.0.1', 8080), 'app', 'inside the pod, 127.0.0.1:8080 still reaches the app (the sidecar\'s upstream)')
  t.equal(askFromPod(podIp, 8080), 'app', 'the pod\'s own outgoing connections are not captured, even to its own address')

  // Re-running (an init container restarted in the same sandbox) refreshes the chain, no duplicate jump.
  const again = capture('--exclude-ports', '9090')
  t.equal(again.status, 0, again.stderr)
  t.match(again.stdout, /already installed/)
  const after = run('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-S']).stdout
  t.equal(after.match(/-A PREROUTING -p tcp -j GATEHOUSE_INBOUND/g)?.length, 1, 'one PREROUTING jump after two runs')
  t.equal(after.match(/REDIRECT/g)?.length, 1, 'one redirect rule after two runs')
  t.equal(await ask(podIp, 8080), 'sidecar', 'still captured')

  if (first.stdout.includes('ipv6:')) {
    const v6 = run('ip', ['netns', 'exec', ns, 'ip6tables', '-t', 'nat', '-S']).stdout
    t.match(v6, /-A PREROUTING -p tcp -j GATEHOUSE_INBOUND/, 'IPv6 gets the same rules (--ipv6 auto, the namespace has IPv6)')
  }

  // Without NET_ADMIN the capture fails, loudly, with its stable code (the init container then
  // fails and the pod does not start uncaptured).
  if (have('setpriv')) {
    const r = run('ip', ['netns', 'exec', ns, 'setpriv', '--inh-caps=-all', '--bounding-set=-net_admin,-net_raw', node, cliPath, 'capture', 'iptables'])
    t.not(r.status, 0, 'refused without NET_ADMIN')
    t.match(r.stderr, /GH_CAPTURE_FAILED/)
  }
})
