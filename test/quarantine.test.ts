import t from 'tap'
import { Agent, ProxyAgent, request } from 'undici'
import { startTestCa, DENY_ALL_POLICY, OK_APP, A_ID } from './helpers/ca-mesh.ts'
import { policyAllowing, startWorkload, type Workload } from './helpers/mesh.ts'
import { postSvid } from './helpers/ca-fixture.ts'
import { editQuarantine } from '../src/ca/quarantine-book.ts'
import { createCsr } from '../src/x509/csr.ts'
import { generateKey } from '../src/x509/keys.ts'
import { sleep, waitFor } from './helpers/wait.ts'

// Quarantine by hand (issue 18) on a CA and three CA-issued sidecars: caller A holds HTTP/2 mesh
// links (through its own sidecar) and direct HTTP/1.1 keep-alive connections (its SVID, issued
// offline) to callees B and C. Quarantining A denies it at both callees before their policies,
// closes what it holds open, stops its own sidecar from calling out, and stops the CA renewing it.

const C_ID = 'spiffe://example.org/ns/c/sa/server'
const B_ID = 'spiffe://example.org/ns/b/sa/server'

t.test('quarantine add: denied everywhere within seconds, live connections closed, no renewal; remove restores', async t => {
  const ca = await startTestCa(t, { leafTtlMs: 600_000 })
  const b = await startWorkload(t, { ca, name: 'b', id: B_ID, policy: policyAllowing(A_ID), app: OK_APP })
  const c = await startWorkload(t, { ca, name: 'c', id: C_ID, policy: policyAllowing(A_ID), app: OK_APP })
  const routes = `version: 1\nroutes:\n  - host: b.internal\n    address: 127.0.0.1:${b.sidecar.inbound.port}\n    id: ${B_ID}\n  - host: c.internal\n    address: 127.0.0.1:${c.sidecar.inbound.port}\n    id: ${C_ID}\n`
  const a = await startWorkload(t, { ca, name: 'a', id: A_ID, policy: DENY_ALL_POLICY, routes })
  const viaA = new ProxyAgent({ uri: `http://127.0.0.1:${a.sidecar.outbound!.port}`, proxyTunnel: false })
  // A's SVID as a direct HTTP/1.1 keep-alive client: one connection per callee, kept open.
  const svid = ca.issue(A_ID, 600_000)
  const direct = new Agent({ connect: { cert: svid.chainPem, key: svid.keyPem, rejectUnauthorized: false }, connections: 1, keepAliveTimeout: 60_000 })
  t.teardown(async () => { await viaA.destroy(); await direct.destroy() })

  const callees: Array<[string, Workload]> = [['b', b], ['c', c]]
  const lastOk: Record<string, number> = {}
  const firstDenied: Record<string, number> = {}
  let running = true
  const loop = async (name: string, callee: Workload, how: 'mesh' | 'direct'): Promise<void> => {
    while (running) {
      try {
        const r = how === 'mesh'
          ? await request(`http://${name}.internal/orders`, { dispatcher: viaA })
          : await request(`https://127.0.0.1:${callee.sidecar.inbound.port}/orders`, { dispatcher: direct })
        await r.body.text()
        if (r.statusCode === 200) lastOk[`${name}-${how}`] = Date.now()
        else firstDenied[`${name}-${how}`] ??= Date.now()
      } catch { firstDenied[`${name}-${how}`] ??= Date.now() }
      await sleep(20) // spaces the calls
    }
  }
  const loops = callees.flatMap(([name, callee]) => [loop(name, callee, 'mesh'), loop(name, callee, 'direct')])
  await waitFor(() => Object.keys(lastOk).length === 4, 10_000, 'every path to serve')

  const added = Date.now()
  editQuarantine(ca.dir, entries => [...entries, { id: A_ID, reason: 'incident 4711: token exfiltrated', added: new Date().toISOString(), by: 'test' }])
  await waitFor(() => callees.every(([, s]) => s.decisions.some(d => d.rule === 'quarantine')), 10_000, 'both callees to deny A by rule quarantine')
  await sleep(500) // a success after the quarantine, if any, would have been recorded by now
  running = false
  await Promise.all(loops)
  for (const key of Object.keys(lastOk)) {
    const after = Math.max(0, lastOk[key]! - added)
    t.ok(after < 3000, `${key}: last success ${after} ms after quarantine add (bound 3 s)`)
  }
  for (const [name, s] of callees) {
    const denied = s.decisions.filter(d => d.rule === 'quarantine')
    t.ok(denied.length > 0 && denied.every(d => d.decision === 'deny' && d.reason === 'quarantined' && d.quarantineReason === 'incident 4711: token exfiltrated' && d.caller === A_ID), `${name}: ${denied.length} requests denied by rule quarantine, with the reason`)
    t.match(await s.metrics(), /gatehouse_quarantine_entries 1/, `${name}: the list is enforced`)
    t.match(await s.metrics(), /gatehouse_quarantine_connections_closed_total\{kind="(h2|http1)"\} [1-9]/, `${name}: A's live connections were closed`)
  }
  t.ok(b.events('quarantine.connections_closed').length > 0)

  const out = await request('http://b.internal/orders', { dispatcher: viaA })
  t.equal(out.statusCode, 403, 'A\'s own sidecar refuses to call out')
  t.match(JSON.parse(await out.body.text()), { error: 'GH_QUARANTINED', message: `${A_ID} is quarantined (incident 4711: token exfiltrated); 'gatehouse ca quarantine remove --spiffe-id ${A_ID}' releases it` })

  const key = generateKey('ec-p256')
  const mtls = new Agent({ connect: { ca: ca.material().bundlePem, cert: svid.chainPem, key: svid.keyPem } })
  t.teardown(async () => { await mtls.close() })
  const renewal = await postSvid({ url: ca.url, agent: mtls }, { csr: createCsr(key.privateKey), dispatcher: mtls })
  t.equal(renewal.status, 403, 'the CA refuses to renew it')
  t.equal(renewal.json?.error, 'GH_QUARANTINED')
  t.ok(ca.logs.some(l => l.event === 'quarantine.added' && l.spiffeId === A_ID && l.reason === 'incident 4711: token exfiltrated'), 'the CA logged who, why and by whom')

  editQuarantine(ca.dir, entries => entries.filter(e => e.id !== A_ID))
  await waitFor(async () => {
    const r = await request('http://c.internal/orders', { dispatcher: viaA })
    await r.body.text()
    return r.statusCode === 200
  }, 10_000, 'remove to restore A')
  t.pass('remove restores A')
})
