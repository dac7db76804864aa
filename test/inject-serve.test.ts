import t from 'tap'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect, type PeerCertificate } from 'node:tls'
import { Agent, request } from 'undici'
import { cliPath } from './helpers/run-cli.ts'
import { Pki } from './helpers/mesh.ts'
import { Issuer } from '../src/ca/issuer.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { generateKey } from '../src/x509/keys.ts'
import { waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// `gatehouse inject serve` as it runs in the cluster: a process with flags, answering AdmissionReviews
// over HTTPS, picking up a renewed serving certificate (cert-manager) without a restart, logging each
// decision, and exiting cleanly on SIGTERM.

t.test('inject serve: answers, reloads its certificate, drains on SIGTERM', async t => {
  const dir = tempDir(t, 'gh-inject-serve-')
  const pki = new Pki(dir)
  const issuer = new Issuer(pki.ca)
  const certFile = join(dir, 'tls.crt')
  const keyFile = join(dir, 'tls.key')
  const mint = (): string => {
    const key = generateKey('ec-p256')
    const svid = issuer.issue({ id: SpiffeId.parse('spiffe://example.org/gatehouse/injector'), publicKey: key.publicKey, ips: ['127.0.0.1'] })
    writeFileSync(keyFile, key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600 })
    writeFileSync(certFile, svid.chainPem)
    return svid.serial
  }
  const firstSerial = mint()

  const child = spawn(process.execPath, [cliPath, 'inject', 'serve', '--listen', '127.0.0.1:0', '--cert', certFile, '--key', keyFile, '--reload-interval', '100ms', '--image', 'gatehouse:test'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: Array<Record<string, any>> = []
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8')
    const parts = stderr.split('\n')
    stderr = parts.pop() ?? ''
    for (const p of parts) { try { lines.push(JSON.parse(p)) } catch { lines.push({ text: p }) } }
  })
  const exited = new Promise<number | null>(resolve => child.on('exit', code => { resolve(code) }))
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })

  await waitFor(() => lines.some(l => l.event === 'inject.listening'), 10_000, 'the webhook to listen')
  const port: number = lines.find(l => l.event === 'inject.listening')!.port
  t.match(lines.find(l => l.event === 'inject.listening'), { image: 'gatehouse:test', host: '127.0.0.1' })

  const agent = new Agent({ connect: { ca: pki.ca.bundlePem } })
  t.teardown(async () => { await agent.destroy() })
  const review = { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'serve-1', kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, namespace: 'shop', operation: 'CREATE', object: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', annotations: { 'gatehouse.io/inject': 'enabled' } }, spec: { containers: [{ name: 'web', image: 'web:1' }] } } } }
  const res = await request(`https://127.0.0.1:${port}/mutate`, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: JSON.stringify(review) })
  t.equal(res.statusCode, 200)
  const body = await res.body.json() as any
  t.match(body.response, { uid: 'serve-1', allowed: true, patchType: 'JSONPatch' })
  const ops = JSON.parse(Buffer.from(body.response.patch, 'base64').toString('utf8')) as any[]
  t.equal(ops.find(o => o.path === '/spec/initContainers').value[0].image, 'gatehouse:test', 'the --image flag reaches the proxy container')
  await waitFor(() => lines.some(l => l.event === 'inject.decision'), 5000, 'the decision log line')
  t.match(lines.find(l => l.event === 'inject.decision'), { uid: 'serve-1', namespace: 'shop', pod: 'web', injected: true, reason: 'injected', msg: 'injected' })

  const servedSerial = async (): Promise<string> => await new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca: pki.ca.bundlePem }, () => {
      const cert: PeerCertificate = s.getPeerCertificate()
      s.end()
      resolve(cert.serialNumber.toLowerCase())
    })
    s.on('error', reject)
  })
  t.equal((await servedSerial()).replace(/^0+/, ''), firstSerial.replace(/^0+/, ''), 'serves the certificate from --cert')
  const secondSerial = mint()
  await waitFor(async () => (await servedSerial()).replace(/^0+/, '') === secondSerial.replace(/^0+/, ''), 10_000, 'the renewed certificate to be served')
  t.pass('a renewed certificate is served without a restart')

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'exits 0 on SIGTERM')
})
