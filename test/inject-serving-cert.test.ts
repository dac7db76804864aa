import t from 'tap'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { X509Certificate } from 'node:crypto'
import { pino } from 'pino'
import { Registry, Gauge } from 'prom-client'
import { Pki, captureLines } from './helpers/mesh.ts'
import { tempDir } from './helpers/files.ts'
import { waitFor, sleep } from './helpers/wait.ts'
import { startProcess } from './helpers/process.ts'
import { cliPath } from './helpers/run-cli.ts'
import { startCaFixture, saSigner, saToken, saClaims, writeJwks, k8sVerifier, POD } from './helpers/ca-fixture.ts'
import { optedInPod } from './helpers/k8s-pod.ts'
import { jwksFromFile } from '../src/ca/k8s-token.ts'
import { watchServingCert } from '../src/inject/serving-cert.ts'

// The injector without hand work: `inject serve --k8s-token-file --trust-bundle` gets its webhook
// serving certificate from the Gatehouse CA (an SVID the CA gives the webhook's DNS name, `ca serve
// --dns-san`), serves with it, and rotates it before it expires with no failed review. The API
// server's view is a TLS client that checks the name and the CA bundle (the caBundle the CA keeps).
// Then the expiry watch: a warning ahead of expiry, and an error for a certificate without the name.

const DNS = 'gatehouse-injector.gatehouse-system.svc'
const INJECTOR = 'spiffe://example.org/ns/gatehouse-system/sa/gatehouse-injector'

/** An AdmissionReview sent as the API server does: TLS to 127.0.0.1 with SNI and name check on the Service DNS name. */
async function review (port: number, caPem: string): Promise<{ status: number, allowed: boolean, serial: string }> {
  const body = JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u-1', kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, namespace: 'shop', operation: 'CREATE', object: optedInPod({ 'gatehouse.io/inject': 'enabled' }) } })
  return await new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, servername: DNS, ca: caPem, method: 'POST', path: '/mutate', headers: { 'content-type': 'application/json' }, agent: false }, res => {
      const serial = new X509Certificate((res.socket as import('node:tls').TLSSocket).getPeerCertificate().raw).serialNumber
      let text = ''
      res.setEncoding('utf8').on('data', (c: string) => { text += c }).on('end', () => {
        resolve({ status: res.statusCode ?? 0, allowed: (JSON.parse(text) as { response?: { allowed?: boolean } }).response?.allowed === true, serial })
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}

t.test('inject serve gets its serving certificate from the CA, is reachable by its DNS name, and rotates it without a failed review', async t => {
  const dir = tempDir(t, 'gh-inj-cert-')
  const signer = await saSigner()
  const ca = await startCaFixture(t, { k8s: k8sVerifier(jwksFromFile(writeJwks(dir, signer))), dnsSans: new Map([[INJECTOR, [DNS]]]), leafTtlMs: 4000 })
  const tokenFile = join(dir, 'token')
  writeFileSync(tokenFile, await saToken(signer, { claims: saClaims({ sub: 'system:serviceaccount:gatehouse-system:gatehouse-injector', 'kubernetes.io': { namespace: 'gatehouse-system', pod: { ...POD }, serviceaccount: { name: 'gatehouse-injector', uid: 'sa-uid' } } }) }))
  const bundle = join(dir, 'bundle.pem')
  writeFileSync(bundle, ca.ca.bundlePem)
  const injector = await startProcess(t, process.execPath, [cliPath, 'inject', 'serve', '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--ca-url', ca.url, '--trust-domain', 'example.org', '--k8s-token-file', tokenFile, '--trust-bundle', bundle], /"event":"inject.listening".*"port":(\d+)/)
  const port = Number(injector.match[1])
  const first = await review(port, ca.ca.bundlePem)
  t.equal(first.status, 200)
  t.ok(first.allowed, 'the review is answered')
  t.notMatch(injector.output(), /inject.cert_wrong_name/, 'the certificate names the webhook')
  // The SVID lives 4 s and renews at about half-life: reviews all through two renewals, none failing.
  const serials = new Set<string>([first.serial])
  let failed = 0
  let sent = 0
  const until = Date.now() + 5000
  while (Date.now() < until) {
    try { const r = await review(port, ca.ca.bundlePem); sent++; serials.add(r.serial); if (r.status !== 200 || !r.allowed) failed++ } catch { failed++ }
    await sleep(50) // spaces the reviews
  }
  t.ok(serials.size >= 2, `served with ${serials.size} certificates in 5 s (rotated)`)
  t.equal(failed, 0, `0 of ${sent} reviews failed across the rotations`)
  await waitFor(() => /inject.cert_reloaded/.test(injector.output()), 2000, 'the reload is logged')
  const metrics = /"event":"inject.metrics_listening".*?"port":(\d+)/.exec(injector.output())
  t.ok(metrics, 'metrics listener')
  const text = await (await fetch(`http://127.0.0.1:${metrics![1]!}/metrics`)).text()
  const m = /^gatehouse_injector_cert_expiry_timestamp_seconds (\d+)/m.exec(text)
  t.ok(m !== null && Number(m[1]) * 1000 > Date.now(), 'the expiry gauge shows a certificate still valid')
})

t.test('the expiry watch: a warning ahead of expiry (once a day, not once a minute), an error for a certificate without the name', async t => {
  const pki = new Pki(tempDir(t, 'gh-inj-watch-'))
  const svid = pki.issue('/ns/gatehouse-system/sa/gatehouse-injector', 'inj', 10 * 24 * 3_600_000)
  const capture = captureLines()
  const gauge = new Gauge({ name: 'x_expiry', help: 'x', registers: [new Registry()] })
  let now = new Date()
  const w = watchServingCert({ current: () => svid.chainPem, dnsName: DNS, warnBeforeMs: 30 * 24 * 3_600_000, gauge, logger: pino(capture.stream), now: () => now, everyMs: 3_600_000 })
  t.teardown(w.stop)
  await waitFor(() => capture.lines.length > 0, 2000, 'the first check logged')
  t.ok(capture.lines.some(l => l.event === 'inject.cert_wrong_name' && l.expected === DNS), 'a certificate without the DNS name is an error at once')
  const warnings = (): number => capture.lines.filter(l => l.event === 'inject.cert_expiring').length
  // 10 days of lifetime: half of it (5 days) is later than 30 days before expiry, so that is when it warns.
  t.equal(warnings(), 0, 'fresh: no warning')
  now = new Date(Date.now() + 6 * 24 * 3_600_000)
  w.check(); w.check()
  await waitFor(() => warnings() > 0, 2000, 'a warning')
  await new Promise(resolve => setImmediate(resolve)) // a second one, if any, is through the stream by now
  t.equal(warnings(), 1, 'past half its lifetime, unrenewed: one warning, however often it is checked that day')
  now = new Date(Date.now() + 7 * 24 * 3_600_000)
  w.check()
  await waitFor(() => warnings() > 1, 2000, 'the next day\'s warning')
  t.equal(warnings(), 2, 'and again the next day')
  t.equal((await gauge.get()).values[0]?.value, Math.floor(new Date(new X509Certificate(svid.chainPem).validTo).getTime() / 1000), 'the gauge is the expiry')
})
