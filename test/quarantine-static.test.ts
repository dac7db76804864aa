import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Pki, startApp, startWorkload } from './helpers/mesh.ts'
import { startEchoServer, openTcp, readAll, viaProxy } from './helpers/outbound-mesh.ts'
import { formatQuarantine, QuarantineList, parseQuarantine } from '../src/quarantine/list.ts'
import { signQuarantine, verifyQuarantine } from '../src/quarantine/signed.ts'
import { TrustBundle } from '../src/spiffe/bundle.ts'
import { waitFor } from './helpers/wait.ts'
import { replaceFile, tempDir } from './helpers/files.ts'

// Quarantine without a CA (--quarantine-file), what a quarantine cuts (a live opaque TCP connection,
// HTTP requests), and the signed list a sidecar accepts from a CA: only its own trust domain's issuer.

const dir = tempDir(t)
const pki = new Pki(dir)
const TD = pki.ca.trustDomain
const A = `spiffe://${TD}/ns/a/sa/caller`
const B = `spiffe://${TD}/ns/b/sa/cache`
const entry = (id: string, reason: string): string => formatQuarantine([{ id, reason, added: new Date().toISOString(), by: 'test' }])

t.test('--quarantine-file: a live TCP connection is cut, requests are denied by rule quarantine; a bad file keeps the last good list', async t => {
  const echo = await startEchoServer(t)
  const app = await startApp(t)
  const quarantineFile = join(dir, 'quarantine.yaml') // missing at start: no one is quarantined
  const b = await startWorkload(t, {
    pki,
    name: 'qb',
    id: B,
    upstreamPort: app.port,
    policy: `version: 1\nrules:\n  - name: tcp\n    from: ["${A}"]\n    ports: [${echo.port}]\n  - name: http\n    from: ["${A}"]\n`,
    sidecar: { tcpUpstreams: new Map([[echo.port, { host: '127.0.0.1', port: echo.port }]]), quarantineFile }
  })
  const a = await startWorkload(t, { pki, name: 'qa', id: A, routes: `version: 1\nroutes:\n  - host: cache.internal\n    protocol: tcp\n    listen: 127.0.0.1:0\n    address: ${b.inboundAddress}\n    id: ${B}\n    port: ${echo.port}\n  - host: b.internal\n    address: ${b.inboundAddress}\n    id: ${B}\n` })
  const live = await openTcp(a.sidecar.outbound!.routeListeners.port({ host: '127.0.0.1', port: 0 })!)
  live.write('hi')
  await new Promise(resolve => live.once('data', resolve))
  t.equal((await viaProxy(a.outboundPort, 'http://b.internal/x')).status, 200)

  const cut = readAll(live, 10_000)
  writeFileSync(quarantineFile, entry('spiffe://example.org/ns/a/**', 'namespace a is compromised'))
  await cut
  await waitFor(() => b.decisions.some(d => d.kind === 'tcp'), 5000, 'the TCP close line')
  t.match(b.decisions.find(d => d.kind === 'tcp'), { decision: 'allow', closeReason: 'quarantined', bytesIn: 2 })
  const r = await viaProxy(a.outboundPort, 'http://b.internal/x')
  t.equal(r.status, 403)
  t.match(b.decisions.at(-1), { decision: 'deny', rule: 'quarantine', reason: 'quarantined', quarantineReason: 'namespace a is compromised', caller: A })

  replaceFile(quarantineFile, 'version: 1\nentries:\n  - id: not-an-id\n')
  await waitFor(() => b.logs.some(l => l.event === 'quarantine.invalid' && l.trigger === 'file-change'), 5000, 'the invalid list to be rejected')
  t.equal((await viaProxy(a.outboundPort, 'http://b.internal/x')).status, 403, 'the last good list still holds')
  replaceFile(quarantineFile, 'version: 1\nentries: []\n')
  await waitFor(async () => (await viaProxy(a.outboundPort, 'http://b.internal/x')).status === 200, 5000, 'release')
  t.pass('an empty list releases it')
})

t.test('the signed list: accepted only from an issuer of our own trust domain, untouched', async t => {
  const bundle = TrustBundle.fromPem(pki.ca.bundlePem, { source: 'bundle' })
  const entries = parseQuarantine(entry(A, 'r'))
  const doc = { trustDomain: TD, revision: new QuarantineList(entries).revision, iat: Math.floor(Date.now() / 1000), entries }
  const jws = signQuarantine(doc, pki.ca.issuerKey, pki.ca.issuer.der)
  t.same((await verifyQuarantine(jws, bundle, TD)).entries, entries, 'the CA\'s own issuer')

  const other = new Pki(tempDir(t), 'other.org')
  const foreign = signQuarantine({ ...doc, trustDomain: TD }, other.ca.issuerKey, other.ca.issuer.der)
  await t.rejects(verifyQuarantine(foreign, bundle, TD), /no root of example\.org in the trust bundle vouches for/, 'another CA\'s issuer')
  const [h, , sig] = jws.split('.')
  const edited = `${h!}.${Buffer.from(JSON.stringify({ ...doc, entries: [] })).toString('base64url')}.${sig!}`
  await t.rejects(verifyQuarantine(edited, bundle, TD), /signature/, 'a payload edited after signing (an entry removed)')
  await t.rejects(verifyQuarantine(signQuarantine({ ...doc, trustDomain: 'other.org' }, pki.ca.issuerKey, pki.ca.issuer.der), bundle, TD), /a list for other\.org/)
})
