import { loadConfig, type Schema } from '../config.ts'
import { ConfigInvalidError } from '../errors.ts'
import { iptablesRules, DEFAULT_INBOUND_PORT, PROXY_PORTS } from '../capture/iptables.ts'
import { applyCapture, ipv6Available } from '../capture/capture-apply.ts'
import type { Runner } from './runner.ts'

// `gatehouse capture iptables`: what the capture init container runs (pod annotation
// gatehouse.io/capture: iptables). It redirects inbound TCP to the sidecar, then exits.

export const captureSchema = {
  'inbound-port': { kind: 'int', default: DEFAULT_INBOUND_PORT, min: 1, help: 'the sidecar\'s inbound port: where inbound TCP is redirected' },
  'exclude-ports': { kind: 'list', default: [], help: `inbound ports that are not captured (comma-separated), besides ${PROXY_PORTS.join(', ')}` },
  ipv6: { kind: 'enum', values: ['auto', 'on', 'off'], default: 'auto', help: 'also capture IPv6 with ip6tables-restore: auto = when the namespace has IPv6' },
  'dry-run': { kind: 'bool', default: false, help: 'print the iptables-restore rules instead of applying them' }
} as const satisfies Schema

export const captureIptables: Runner = async (argv, io) => {
  const c = loadConfig('capture iptables', captureSchema, { argv })
  const problems: string[] = []
  if (c.inboundPort > 65535) problems.push(`--inbound-port: expected a TCP port (1-65535), got ${c.inboundPort}`)
  const excludePorts = c.excludePorts.map(p => {
    const n = Number(p)
    if (!/^\d{1,5}$/.test(p) || n < 1 || n > 65535) problems.push(`--exclude-ports: expected TCP ports (1-65535), got ${JSON.stringify(p)}`)
    return n
  })
  if (c.positionals.length > 0) problems.push(`unexpected argument(s): ${c.positionals.join(' ')}`)
  if (problems.length > 0) throw new ConfigInvalidError(problems)

  const opts = { inboundPort: c.inboundPort, excludePorts }
  const ipv6 = c.ipv6 === 'on' || (c.ipv6 === 'auto' && ipv6Available())
  if (c.dryRun) {
    io.out(iptablesRules(opts))
    if (ipv6) io.out(`# the same rules are applied with ip6tables-restore --noflush\n`)
    return 0
  }
  for (const r of await applyCapture({ ...opts, ipv6 })) {
    io.out(`${r.family}: inbound TCP redirected to port ${opts.inboundPort}${r.jumpAdded ? '' : ' (rules refreshed; already installed)'}\n`)
  }
  return 0
}
