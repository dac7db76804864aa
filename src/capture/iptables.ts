import { ConfigInvalidError } from '../errors.ts'
import { PORTS } from '../ports.ts'

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
// This file is pure (the rules and the init container's spec, for the injector); capture-apply.ts
// runs them.

export const CHAIN = 'GATEHOUSE_INBOUND'
export const DEFAULT_INBOUND_PORT = PORTS.inbound
/** The sidecar's own listeners: inbound mTLS, outbound HTTP proxy, admin (probes, metrics). */
export const PROXY_PORTS: readonly number[] = [PORTS.inbound, PORTS.outbound, PORTS.admin]
export const CAPTURE_CONTAINER = 'gatehouse-capture'

/** The jump from PREROUTING to our chain, as iptables arguments (for -A, -C and -D alike). */
export const JUMP_RULE: readonly string[] = ['PREROUTING', '-p', 'tcp', '-j', CHAIN]

export interface CaptureOptions {
  inboundPort: number
  /** Inbound destination ports that are not captured, in addition to the proxy's own ports. */
  excludePorts: number[]
}

function checkPort (what: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigInvalidError([`${what} must be a TCP port (1-65535), got ${String(port)}`])
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
