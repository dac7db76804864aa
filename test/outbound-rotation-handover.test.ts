import t from 'tap'
import { readFileSync } from 'node:fs'
import { Pki, startApp, tempDir, eventually } from './helpers/mesh.ts'
import { CALLER_ID, CALLEE_ID, TD, routesYaml, startWorkload, viaProxy, replaceFile } from './helpers/outbound-mesh.ts'

// After the caller's SVID rotates, its outbound connections made with the old SVID are not all
// dropped at once (every waiting request would then open its own mTLS connection at the same moment):
// they keep a share of the requests that falls to zero over the hand-over, then are closed. New
// connections present the new SVID from the moment it is installed.

const HANDOVER_MS = 2500

t.test('a rotation hands outbound traffic over from the old connections to new ones, then retires the old', async t => {
  const dir = tempDir(t, 'gh-outbound-handover-')
  const pki = new Pki(dir, TD)
  const app = await startApp(t)
  const b = await startWorkload(t, pki, dir, { name: 'b', id: CALLEE_ID, upstreamPort: app.port, allow: [CALLER_ID] })
  const a = await startWorkload(t, pki, dir, {
    name: 'a',
    id: CALLER_ID,
    routes: routesYaml([{ host: 'b.internal', address: b.inboundAddress, id: CALLEE_ID }]),
    sidecar: { rotationHandoverMs: HANDOVER_MS }
  })
  const serialSeenByB = (): string => b.decisions.at(-1)?.peerCertSerial as string
  let failed = 0
  const call = async (): Promise<string> => {
    const res = await viaProxy(a.outboundPort, 'http://b.internal/x')
    if (res.status !== 200) failed++
    return serialSeenByB()
  }

  // Warm A's pool with several keep-alive connections to B.
  await Promise.all(Array.from({ length: 8 }, call))
  const oldSerial = a.sidecar.credentials.current!.leaf.serialHex
  t.equal(serialSeenByB(), oldSerial)

  const next = pki.issue(CALLER_ID, 'a-next')
  replaceFile(a.svid.key, readFileSync(next.key, 'utf8'))
  replaceFile(a.svid.cert, readFileSync(next.cert, 'utf8'))
  await eventually(() => a.sidecar.credentials.current!.leaf.serialHex !== oldSerial, 10_000, 'A to load its new SVID')
  const rotatedAt = Date.now()
  const newSerial = a.sidecar.credentials.current!.leaf.serialHex

  // Right after the rotation, most calls still travel on the warm connections (old certificate).
  const early: string[] = []
  while (Date.now() - rotatedAt < HANDOVER_MS / 5) early.push(await call())
  const oldShare = early.filter(s => s === oldSerial).length / early.length
  t.ok(early.length >= 5, `${early.length} calls in the first fifth of the hand-over`)
  t.ok(oldShare >= 0.5, `most early calls reuse the old connections (${(oldShare * 100).toFixed(0)} % of ${early.length})`)
  t.ok(early.every(s => s === oldSerial || s === newSerial), 'every call carries the old or the new certificate')

  // After the hand-over, the old connections are gone: every call presents the new certificate.
  await new Promise(resolve => setTimeout(resolve, HANDOVER_MS - (Date.now() - rotatedAt) + 200))
  const late = await Promise.all(Array.from({ length: 8 }, call))
  t.same([...new Set(late)], [newSerial], 'after the hand-over only the new certificate is presented')
  t.equal(failed, 0, 'no call failed')
})
