import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { GatehouseError } from '../errors.ts'

// Inbound capture for pods annotated `gatehouse.io/capture: iptables`: an init container, run in the
// pod's network namespace before any other container, installs NAT rules that send every inbound TCP
// connection to the sidecar's inbound port (15006), so a Service may keep targeting the app's port.
//
// Only the nat table's PREROUTING hook is used: it sees packets that arrive on an interface (eth0),
// never packets the pod's own processes send. So
//   - outbound traffic (OUTPUT) is not touched: the app reaches the mesh through HTTP_PROXY;
//   - loopback is not touched: the sidecar's forward to 127.0.0.1:<app port> reaches the app, and the
//     `-i lo -j RETURN` rule says so explicitly even for a packet looped back through PREROUTING;
//   - the sidecar's own ports (15006 inbound, 15001 outbound, 15020 admin: kubelet probes) and any
//     excluded port (e.g. a metrics port scraped in plaintext) are left alone with RETURN.
// The rules are an iptables-restore file applied with --noflush, so nothing else in the namespace's
// tables is flushed; re-applying replaces our chain's content and adds the PREROUTING jump once.

export const CHAIN = 'GATEHOUSE_INBOUND'
export const DEFAULT_INBOUND_PORT = 15006
/** The sidecar's own listeners: inbound mTLS, outbound HTTP proxy, admin (probes, metrics). */
export const PROXY_PORTS: readonly number[] = [15006, 15001, 15020]
export const CAPTURE_CONTAINER = 'gatehouse-capture'

/** The jump from PREROUTING to our chain, as iptables arguments (for -A, -C and -D alike). */
export const JUMP_RULE: readonly string[] = ['PREROUTING', '-p', 'tcp', '-j', CHAIN]

export interface CaptureOptions {
  inboundPort: number
  /** Inbound destination ports that are not captured, in addition to the proxy's own ports. */
  excludePorts: number[]
}

export class CaptureError extends GatehouseError {
  constructor (message: string) { super('GH_CAPTURE_FAILED', 500, message) }
}

function checkPort (what: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new GatehouseError('GH_CONFIG_INVALID', 400, `${what} must be a TCP port (1-65535), got ${String(port)}`)
}

/** The ports that bypass capture, deduplicated, in a stable order: the proxy's own ports first. */
export function bypassPorts (opts: CaptureOptions): number[] {
  checkPort('inbound port', opts.inboundPort)
  for (const p of opts.excludePorts) checkPort('excluded port', p)
  return [...new Set([opts.inboundPort, ...PROXY_PORTS, ...opts.excludePorts])]
}

/**
 * The iptables-restore input (IPv4 and IPv6 share the syntax) for the nat table.
 * `withJump: false` leaves out the PREROUTING jump, for when it is already installed.
 */
export function iptablesRules (opts: CaptureOptions, { withJump = true }: { withJump?: boolean } = {}): string {
  const lines = [
    '# gatehouse inbound capture: inbound TCP -> the sidecar, except loopback and the ports below',
    '*nat',
    // Declaring the chain creates it, or flushes it if it exists (even with --noflush): re-applying is safe.
    `:${CHAIN} - [0:0]`,
    `-A ${CHAIN} -i lo -j RETURN`,
    ...bypassPorts(opts).map(p => `-A ${CHAIN} -p tcp --dport ${p} -j RETURN`),
    `-A ${CHAIN} -p tcp -j REDIRECT --to-ports ${opts.inboundPort}`,
    ...(withJump ? [`-A ${JUMP_RULE.join(' ')}`] : []),
    'COMMIT',
    ''
  ]
  return lines.join('\n')
}

export interface ExecResult { code: number | null, stdout: string, stderr: string }
export type Exec = (file: string, args: string[], input?: string) => Promise<ExecResult>

/** execFile with stdin, no shell; a missing binary is reported as a CaptureError. */
export const execWithInput: Exec = async (file, args, input) => await new Promise((resolve, reject) => {
  const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], shell: false })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  child.on('error', (err: NodeJS.ErrnoException) => {
    reject(new CaptureError(err.code === 'ENOENT' ? `${file} not found: the capture image needs the iptables package (build the Dockerfile's "capture" target)` : `cannot run ${file}: ${err.message}`))
  })
  child.on('close', code => { resolve({ code, stdout, stderr }) })
  child.stdin.on('error', () => { /* the process exited early: its status tells why */ })
  child.stdin.end(input ?? '')
})

export interface ApplyOptions extends CaptureOptions {
  /** Also install the rules for IPv6 with ip6tables-restore. */
  ipv6: boolean
  exec?: Exec
}

export interface ApplyReport { family: 'ipv4' | 'ipv6', jumpAdded: boolean }

/** Whether this network namespace has IPv6 (the kernel lists IPv6 addresses there). */
export function ipv6Available (): boolean {
  return existsSync('/proc/net/if_inet6')
}

/** Installs the rules in the current network namespace. Needs CAP_NET_ADMIN (and NET_RAW for the nat table). */
export async function applyCapture (opts: ApplyOptions): Promise<ApplyReport[]> {
  const exec = opts.exec ?? execWithInput
  const families = [['ipv4', 'iptables'] as const, ...(opts.ipv6 ? [['ipv6', 'ip6tables'] as const] : [])]
  const reports: ApplyReport[] = []
  for (const [family, bin] of families) {
    // -C exits 0 when the rule exists (1 when it does not, or when the chain does not exist yet).
    const present = (await exec(bin, ['-t', 'nat', '-C', ...JUMP_RULE])).code === 0
    const r = await exec(`${bin}-restore`, ['--noflush'], iptablesRules(opts, { withJump: !present }))
    if (r.code !== 0) throw new CaptureError(`${bin}-restore failed (exit ${String(r.code)}): ${r.stderr.trim().slice(0, 2000)}`)
    reports.push({ family, jumpAdded: !present })
  }
  return reports
}

/** Kubernetes container spec for the capture init container (placed before the proxy sidecar). */
export function captureInitContainer (opts: { image: string, inboundPort: number, excludePorts: number[] }): Record<string, unknown> {
  bypassPorts(opts) // validates the ports
  const args = ['capture', 'iptables', '--inbound-port', String(opts.inboundPort)]
  if (opts.excludePorts.length > 0) args.push('--exclude-ports', [...new Set(opts.excludePorts)].join(','))
  return {
    name: CAPTURE_CONTAINER,
    image: opts.image,
    // The image's entrypoint is `gatehouse`: args are its subcommand and flags.
    args,
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { cpu: '100m', memory: '64Mi' } },
    securityContext: {
      // The only root, capability-holding container of the pod, and it exits before the app starts.
      // NET_ADMIN to change the namespace's netfilter tables; NET_RAW because iptables-legacy talks
      // to the kernel through a raw IP socket (iptables-nft needs only NET_ADMIN). All else dropped.
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' }
    }
  }
}
