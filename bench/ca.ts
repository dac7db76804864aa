// bench/ca: certificate signatures per second on one core (this process's main thread), for the
// Gatehouse issuer (node-forge ASN.1 + node:crypto signing) with ECDSA P-256 and RSA-2048 issuers,
// the full issuance path (CSR verify + build + self-check with the SVID verifier), and, for the
// choice recorded in the README, @peculiar/x509 building the same leaf via WebCrypto.
//   npm run bench:ca [-- --seconds 3]
import 'reflect-metadata'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import { webcrypto, createPublicKey } from 'node:crypto'
import * as px from '@peculiar/x509'
import { initCa, loadCa } from '../src/ca/store.ts'
import { Issuer } from '../src/ca/issuer.ts'
import { buildCertificate } from '../src/x509/build.ts'
import { createCsr, verifyCsr } from '../src/x509/csr.ts'
import { generateKey, type KeyType } from '../src/x509/keys.ts'
import { SpiffeId } from '../src/spiffe/id.ts'

const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1] ?? 3) || 3

async function rate (fn: () => unknown | Promise<unknown>): Promise<number> {
  for (let i = 0; i < 50; i++) await fn() // warm-up
  let n = 0
  const start = performance.now()
  while (performance.now() - start < seconds * 1000) { await fn(); n++ }
  return n / ((performance.now() - start) / 1000)
}

const rows: Array<{ what: string, perSecond: number }> = []
const id = SpiffeId.parse('spiffe://bench.local/ns/payments/sa/api')
const workload = generateKey('ec-p256')
const csr = createCsr(workload.privateKey)

for (const keyType of ['ec-p256', 'rsa-2048'] as KeyType[]) {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-ca-'))
  try {
    initCa({ dir, trustDomain: 'bench.local', keyType })
    const ca = loadCa(dir)
    const issuer = new Issuer(ca)
    const spec = { publicKey: workload.publicKey, signerKey: ca.issuerKey, issuerDer: ca.issuer.der, subject: {}, notBefore: new Date(), notAfter: new Date(Date.now() + 3_600_000), uri: id.toString() }
    rows.push({ what: `${keyType} issuer: sign leaf (build + sign)`, perSecond: await rate(() => buildCertificate(spec)) })
    rows.push({ what: `${keyType} issuer: full issuance (CSR verify + sign + SVID self-check)`, perSecond: await rate(() => issuer.issue({ id, publicKey: verifyCsr(csr) })) })

    if (keyType === 'ec-p256') {
      // The alternative considered: @peculiar/x509 (WebCrypto, needs a Reflect polyfill).
      px.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px.cryptoProvider.set>[0])
      const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
      const signingKey = await webcrypto.subtle.importKey('pkcs8', ca.issuerKey.export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign'])
      const publicKey = await webcrypto.subtle.importKey('spki', createPublicKey(workload.privateKey).export({ type: 'spki', format: 'der' }), alg, true, ['verify'])
      const issuerCert = new px.X509Certificate(ca.issuer.der)
      rows.push({
        what: 'ec-p256 issuer: sign leaf with @peculiar/x509 (comparison)',
        perSecond: await rate(async () => await px.X509CertificateGenerator.create({
          serialNumber: '01', issuer: issuerCert.subject, subject: '', notBefore: new Date(), notAfter: new Date(Date.now() + 3_600_000),
          signingAlgorithm: alg, publicKey, signingKey,
          extensions: [
            new px.BasicConstraintsExtension(false, undefined, true),
            new px.KeyUsagesExtension(px.KeyUsageFlags.digitalSignature, true),
            new px.ExtendedKeyUsageExtension(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']),
            new px.SubjectAlternativeNameExtension([{ type: 'url', value: id.toString() }], true)
          ]
        }))
      })
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

process.stdout.write(`bench/ca on Node ${process.versions.node}, ${cpus()[0]?.model ?? 'cpu'} (one core: single thread), ${seconds}s per row\n`)
for (const r of rows) process.stdout.write(`${r.what.padEnd(78)} ${Math.round(r.perSecond).toString().padStart(7)} /s\n`)
