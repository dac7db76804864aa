import t from 'tap'
import { gatehouse } from './helpers/run-cli.ts'
import { iptablesRules, bypassPorts, captureInitContainer, CHAIN, CAPTURE_CONTAINER } from '../src/capture/iptables.ts'
import { applyCapture, type Exec } from '../src/capture/capture-apply.ts'
import { captureSchema } from '../src/cli/capture.ts'

// The rules text and the init container spec, without touching any network (see capture-netns.test.ts
// for the rules at work in a network namespace).

t.test('rules: a chain in nat PREROUTING that returns loopback and the proxy ports, then redirects', async t => {
  const text = iptablesRules({ inboundPort: 15006, excludePorts: [9090] })
  t.equal(text, [
    '# gatehouse inbound capture: inbound TCP -> the sidecar, except loopback and the ports below',
    '*nat',
    ':GATEHOUSE_INBOUND - [0:0]',
    '-A GATEHOUSE_INBOUND -i lo -j RETURN',
    '-A GATEHOUSE_INBOUND -p tcp --dport 15006 -j RETURN',
    '-A GATEHOUSE_INBOUND -p tcp --dport 15001 -j RETURN',
    '-A GATEHOUSE_INBOUND -p tcp --dport 15020 -j RETURN',
    '-A GATEHOUSE_INBOUND -p tcp --dport 9090 -j RETURN',
    '-A GATEHOUSE_INBOUND -p tcp -j REDIRECT --to-ports 15006',
    '-A PREROUTING -p tcp -j GATEHOUSE_INBOUND',
    'COMMIT',
    ''
  ].join('\n'))
  const lines = text.split('\n')
  t.notOk(lines.some(l => / OUTPUT | POSTROUTING /.test(` ${l} `) || l.startsWith('*filter') || l.startsWith('*mangle')), 'only nat PREROUTING: outbound and loopback-originated traffic untouched')
  t.notOk(lines.some(l => /^:(PREROUTING|INPUT|OUTPUT|POSTROUTING) /.test(l)), 'built-in chains are not declared (so --noflush leaves their other rules alone)')
  const redirect = lines.findIndex(l => l.includes('REDIRECT'))
  t.ok(lines.slice(0, redirect).every(l => !l.startsWith(`-A ${CHAIN}`) || l.endsWith('RETURN')), 'every exception comes before the redirect')
  t.equal(lines.filter(l => l.startsWith('-A PREROUTING')).length, 1, 'one jump')
})

t.test('rules: another inbound port, duplicates merged, the jump can be left out', async t => {
  const text = iptablesRules({ inboundPort: 16006, excludePorts: [15020, 8081, 8081] }, { withJump: false })
  t.match(text, /-A GATEHOUSE_INBOUND -p tcp -j REDIRECT --to-ports 16006\n/)
  t.match(text, /--dport 16006 -j RETURN/, 'the configured inbound port is never redirected to itself')
  t.equal(text.match(/--dport 8081 /g)?.length, 1)
  t.equal(text.match(/--dport 15020 /g)?.length, 1)
  t.notMatch(text, /-A PREROUTING/)
  t.same(bypassPorts({ inboundPort: 15006, excludePorts: [15006, 22] }), [15006, 15001, 15020, 22])
})

t.test('rules: ports are validated', async t => {
  for (const bad of [0, 65536, 1.5, Number.NaN]) {
    t.throws(() => iptablesRules({ inboundPort: bad, excludePorts: [] }), { code: 'GH_CONFIG_INVALID' }, `inbound ${bad}`)
    t.throws(() => iptablesRules({ inboundPort: 15006, excludePorts: [bad] }), { code: 'GH_CONFIG_INVALID' }, `excluded ${bad}`)
  }
})

t.test('apply: -C first, then iptables-restore --noflush on stdin; the jump is added only once', async t => {
  const calls: Array<{ file: string, args: string[], input?: string }> = []
  const installed = new Set<string>() // per family: iptables, ip6tables
  const exec: Exec = async (file, args, input) => {
    calls.push({ file, args, ...(input === undefined ? {} : { input }) })
    if (args.includes('-C')) return { code: installed.has(file) ? 0 : 1, stdout: '', stderr: '' }
    if (input?.includes('-A PREROUTING') === true) installed.add(file.replace(/-restore$/, ''))
    return { code: 0, stdout: '', stderr: '' }
  }
  t.same(await applyCapture({ inboundPort: 15006, excludePorts: [], ipv6: false, exec }), [{ family: 'ipv4', jumpAdded: true }])
  t.same(calls.map(c => [c.file, ...c.args]), [
    ['iptables', '-t', 'nat', '-C', 'PREROUTING', '-p', 'tcp', '-j', 'GATEHOUSE_INBOUND'],
    ['iptables-restore', '--noflush']
  ])
  t.match(calls[1]?.input, /-A PREROUTING -p tcp -j GATEHOUSE_INBOUND/)
  calls.length = 0
  t.same(await applyCapture({ inboundPort: 15006, excludePorts: [], ipv6: true, exec }), [{ family: 'ipv4', jumpAdded: false }, { family: 'ipv6', jumpAdded: true }])
  t.notMatch(calls[1]?.input, /-A PREROUTING/, 'second run: chain refreshed, jump not duplicated')
  t.same(calls.map(c => c.file), ['iptables', 'iptables-restore', 'ip6tables', 'ip6tables-restore'])
})

t.test('apply: a failing iptables-restore is a GH_CAPTURE_FAILED error with its stderr', async t => {
  const exec: Exec = async (_file, args) => args.includes('-C') ? { code: 1, stdout: '', stderr: '' } : { code: 2, stdout: '', stderr: 'iptables-restore: line 3 failed\n' }
  await t.rejects(applyCapture({ inboundPort: 15006, excludePorts: [], ipv6: false, exec }), { code: 'GH_CAPTURE_FAILED', message: /exit 2.*line 3 failed/ })
})

t.test('captureInitContainer: the command, and root with NET_ADMIN/NET_RAW only', async t => {
  const c = captureInitContainer({ image: 'registry.example.com/gatehouse-capture:0.1.0', inboundPort: 15006, excludePorts: [9090, 9091] })
  t.equal(c.name, CAPTURE_CONTAINER)
  t.equal(c.name, 'gatehouse-capture')
  t.equal(c.image, 'registry.example.com/gatehouse-capture:0.1.0')
  t.same(c.args, ['capture', 'iptables', '--inbound-port', '15006', '--exclude-ports', '9090,9091'])
  t.notOk('command' in c, 'the image entrypoint (gatehouse) runs it')
  t.same(c.securityContext, {
    runAsUser: 0,
    runAsGroup: 0,
    runAsNonRoot: false,
    privileged: false,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' }
  })
  t.notOk('restartPolicy' in c, 'a plain init container: runs to completion before the sidecar and the app')
  t.same(captureInitContainer({ image: 'x:1', inboundPort: 15006, excludePorts: [] }).args, ['capture', 'iptables', '--inbound-port', '15006'])
  t.throws(() => captureInitContainer({ image: 'x:1', inboundPort: 15006, excludePorts: [70000] }), { code: 'GH_CONFIG_INVALID' })

  // Every flag it passes is a flag of `gatehouse capture iptables`.
  const flags = (c.args as string[]).filter(a => a.startsWith('--')).map(a => a.slice(2))
  for (const f of flags) t.ok(f in captureSchema, `--${f} is a real flag`)
})

t.test('CLI: --dry-run prints the rules; bad ports are configuration errors (exit 2)', async t => {
  const r = gatehouse(['capture', 'iptables', '--dry-run', '--exclude-ports', '9090,9091', '--ipv6', 'off'])
  t.equal(r.status, 0, r.stderr)
  t.equal(r.stdout, iptablesRules({ inboundPort: 15006, excludePorts: [9090, 9091] }))
  const v6 = gatehouse(['capture', 'iptables', '--dry-run', '--ipv6', 'on'])
  t.match(v6.stdout, /ip6tables-restore --noflush/)
  const env = gatehouse(['capture', 'iptables', '--dry-run', '--ipv6', 'off'], { GATEHOUSE_INBOUND_PORT: '16006' })
  t.match(env.stdout, /REDIRECT --to-ports 16006/, 'flags also come from GATEHOUSE_* env')
  const bad = gatehouse(['capture', 'iptables', '--dry-run', '--exclude-ports', '80,x,70000'])
  t.equal(bad.status, 2)
  t.match(bad.stderr, /GH_CONFIG_INVALID/)
  t.match(bad.stderr, /"x"/)
  t.match(bad.stderr, /"70000"/)
  t.equal(gatehouse(['capture', 'iptables', '--inbound-port', '70000', '--dry-run']).status, 2)
  const help = gatehouse(['capture', 'iptables', '--help'])
  t.match(help.stdout, /--exclude-ports/)
  t.match(gatehouse(['--help']).stderr, /capture iptables/, 'listed in the command list')
})
