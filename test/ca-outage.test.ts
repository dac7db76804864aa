import t from 'tap'
import { metricValue } from './helpers/inbound-probe.ts'
import { startCaMesh, A_ID, B_ID, type CaMesh } from './helpers/ca-mesh.ts'
import type { Workload } from './helpers/mesh.ts'
import { sleep, waitFor } from './helpers/wait.ts'
import { replaceFile } from './helpers/files.ts'

// CA outage: with 6 s leaves, the CA goes away.
//   1. A short outage across a renewal: the renewal fails (logged, counted), the sidecar keeps
//      serving with its current certificate and, once the CA is back, renews over mTLS with that
//      certificate: no restart, no new token.
//   2. A long outage: both sidecars keep serving A -> B while their certificates are valid, /readyz
//      stays 200 until expiry and turns 503 after it. A join token is single-use, so a sidecar whose
//      certificate expired needs a new one: it is written to the token file while the CA is down (as
//      an operator would), the CA comes back on the same port, and both renew without a restart.

const LEAF_TTL_MS = 6000

interface Sample { at: number, status: number }

/** Polls /readyz of a sidecar every 100 ms until stopped. */
function watchReady (s: Workload): { samples: Sample[], stop: () => Promise<void> } {
  const samples: Sample[] = []
  let running = true
  const loop = (async () => {
    while (running) {
      const at = Date.now()
      samples.push({ at, status: (await s.readyz()).status })
      await sleep(100) // the /readyz polling interval
    }
  })()
  return { samples, stop: async () => { running = false; await loop } }
}

interface Call { start: number, end: number, status: number | string }

/** One A -> B call after another until stopped, each recorded with its start and end. */
function callLoop (mesh: CaMesh): { calls: Call[], stop: () => Promise<void> } {
  const calls: Call[] = []
  let running = true
  const loop = (async () => {
    while (running) {
      const start = Date.now()
      let status: number | string
      try { const r = await mesh.call('/during-outage'); status = r.body === 'ok' ? r.status : `${r.status} ${r.body}` } catch (err) { status = (err as Error & { code?: string }).code ?? (err as Error).message }
      calls.push({ start, end: Date.now(), status })
      await sleep(20) // spaces the calls
    }
  })()
  return { calls, stop: async () => { running = false; await loop } }
}

const rotatedAfter = (s: Workload, since: number): Array<Record<string, any>> => s.events('identity.rotated').filter(l => (l.time as number) > since)
const failedAfter = (s: Workload, since: number): Array<Record<string, any>> => s.events('identity.renewal_failed').filter(l => (l.time as number) > since)

t.test('the sidecars ride out a CA outage and renew, without a restart, once it is back', async t => {
  const mesh = await startCaMesh(t, { leafTtlMs: LEAF_TTL_MS })
  const { ca, a, b } = mesh
  t.equal((await mesh.call('/before')).status, 200, 'A -> B works')

  // 1. Short outage across the next renewal of whichever sidecar renews first.
  const stop1 = Date.now()
  await ca.stop()
  t.comment(`CA stopped (short outage); port ${ca.port}`)
  let first: Workload | undefined
  await waitFor(() => { first = [a, b].find(s => failedAfter(s, stop1).length > 0); return first !== undefined }, 8000, 'a renewal to fail')
  const failure = failedAfter(first!, stop1)[0]!
  const notAfterAtFailure = first!.sidecar.credentials.current!.notAfter.getTime()
  await ca.restart()
  t.equal(ca.url, `https://127.0.0.1:${ca.port}`, 'the CA is back on the same port')
  t.match(failure, { why: 'renewal', auth: 'svid', msg: 'renewal failed; still serving with the current certificate' }, `${first!.name}: the failed renewal is logged (code ${failure.code as string})`)
  t.ok(typeof failure.code === 'string' && failure.code !== '', 'with a code')
  t.ok(failure.retryInMs >= 500 && failure.retryInMs <= 1500, `first retry in ${failure.retryInMs as number} ms (backoff 1 s +-50%)`)
  t.equal(failure.currentNotAfter, new Date(notAfterAtFailure).toISOString(), 'names the certificate still in use')
  await waitFor(() => rotatedAfter(first!, failure.time as number).length > 0, 4000, 'the retried renewal')
  const renewed = rotatedAfter(first!, failure.time as number)[0]!
  t.match(renewed, { why: 'renewal', auth: 'svid' }, `${first!.name} renewed over mTLS with its current certificate once the CA was back`)
  t.ok((renewed.time as number) < notAfterAtFailure, 'before that certificate expired')
  t.ok(first!.sidecar.credentials.current!.notAfter.getTime() > notAfterAtFailure, 'and now holds a later one')
  t.ok(metricValue(await first!.metrics(), 'gatehouse_cert_renewal_failures_total') >= 1, 'the failure is counted')
  t.equal((await mesh.call('/after-short-outage')).status, 200, 'A -> B works')

  // 2. Long outage, past expiry. Start right after both have renewed with the CA back.
  await waitFor(() => rotatedAfter(a, stop1 + 50).length > 0 && rotatedAfter(b, stop1 + 50).length > 0, 8000, 'both to renew after the short outage')
  const stop2 = Date.now()
  await ca.stop()
  const expiry = { a: a.sidecar.credentials.current!.notAfter.getTime(), b: b.sidecar.credentials.current!.notAfter.getTime() }
  t.comment(`CA stopped (long outage); A expires in ${expiry.a - Date.now()} ms, B in ${expiry.b - Date.now()} ms`)
  const ready = { a: watchReady(a), b: watchReady(b) }
  const load = callLoop(mesh)
  t.teardown(async () => { await Promise.all([ready.a.stop(), ready.b.stop(), load.stop()]) })

  await waitFor(() => failedAfter(a, stop2).length > 0 && failedAfter(b, stop2).length > 0, 8000, 'both renewals to fail')
  const lastExpiry = Math.max(expiry.a, expiry.b)
  await waitFor(() => Date.now() > lastExpiry + 1000, 10_000, 'both certificates to expire')
  await load.stop()
  await Promise.all([ready.a.stop(), ready.b.stop()])

  // Served while valid...
  const firstExpiry = Math.min(expiry.a, expiry.b)
  const whileValid = load.calls.filter(c => c.end < firstExpiry - 300)
  t.ok(whileValid.length >= 10, `${whileValid.length} A -> B calls made with the CA down, before any certificate expired`)
  t.same(whileValid.filter(c => c.status !== 200), [], 'every one of them succeeded')
  const afterExpiry = load.calls.filter(c => c.start > lastExpiry + 300)
  t.ok(afterExpiry.length > 0 && afterExpiry.every(c => c.status !== 200), `after expiry A -> B fails closed (${afterExpiry.length} calls, e.g. ${String(afterExpiry[0]?.status).slice(0, 120)})`)

  // ...and /readyz says so: 200 until expiry, 503 after.
  for (const [name, s] of Object.entries(ready)) {
    const notAfter = expiry[name as 'a' | 'b']
    const before = s.samples.filter(x => x.at < notAfter - 150)
    const after = s.samples.filter(x => x.at > notAfter + 150)
    t.ok(before.length >= 5 && before.every(x => x.status === 200), `${name}: /readyz 200 while the certificate is valid (${before.length} samples with the CA down)`)
    t.ok(after.length >= 3 && after.every(x => x.status === 503), `${name}: /readyz 503 after it expired (${after.length} samples)`)
  }
  const body = await a.readyz()
  t.match(JSON.parse(body.body), { status: 'not-ready', reasons: ['no valid workload certificate'] }, 'the reason is given')

  // Failures logged and counted, before and after expiry.
  for (const s of [a, b]) {
    const failed = failedAfter(s, stop2)
    t.ok(failed.every(l => l.why === 'renewal' && typeof l.code === 'string'), `${s.name}: ${failed.length} failed renewals logged, codes ${[...new Set(failed.map(l => l.code as string))].join(',')}`)
    t.ok(failed.filter(l => (l.time as number) < s.sidecar.credentials.current!.notAfter.getTime()).every(l => l.msg === 'renewal failed; still serving with the current certificate'), `${s.name}: before expiry: "still serving with the current certificate"`)
    const retries = failed.map(l => l.retryInMs as number)
    t.ok(retries.every((r, i) => i === 0 || r >= 0.3 * retries[i - 1]!), `${s.name}: retries back off (${retries.join(', ')} ms)`)
    const counted = metricValue(await s.metrics(), 'gatehouse_cert_renewal_failures_total')
    t.ok(counted >= s.events('identity.renewal_failed').length, `${s.name}: gatehouse_cert_renewal_failures_total = ${counted}`)
  }

  // The CA comes back (same port); the expired sidecars get a new join token each (the first one was
  // spent) through the token file, which they read again at their next attempt.
  replaceFile(a.tokenFile, await ca.joinToken(A_ID))
  replaceFile(b.tokenFile, await ca.joinToken(B_ID))
  const back = Date.now()
  await ca.restart()
  t.comment(`CA restarted on port ${ca.port}`)
  await waitFor(() => rotatedAfter(a, back).length > 0 && rotatedAfter(b, back).length > 0, 15_000, 'both sidecars to renew')
  for (const s of [a, b]) {
    t.match(rotatedAfter(s, back)[0], { why: 'renewal', auth: 'token' }, `${s.name} renewed without a restart (${rotatedAfter(s, back)[0]!.time - back} ms after the CA came back)`)
    t.equal((await s.readyz()).status, 200, `${s.name}: /readyz 200 again`)
  }
  await waitFor(async () => (await mesh.call('/after-outage')).status === 200, 5000, 'A -> B to work again')
  t.pass('A -> B works again')
  t.equal((await mesh.call('/after-outage-2')).status, 200, 'and keeps working')
})
