// bench/ca: certificate signatures per second on one core (this process's main thread), for the
// Gatehouse issuer (node-forge ASN.1 + node:crypto signing) with ECDSA P-256 and RSA-2048 issuers,
// the full issuance path (CSR verify + build + self-check with the SVID verifier), and, for the
// choice recorded in docs/ca.md, @peculiar/x509 building the same leaf via WebCrypto.
//   npm run bench:ca [-- --seconds 3]
// The first two rows per key type are bench/measure/ca.ts, also run by `npm run bench`.
import 'reflect-metadata'
import { cpus } from 'node:os'
import { webcrypto, createPublicKey } from 'node:crypto'
import * as px from '@peculiar/x509'
import { generateKey } from '../src/x509/keys.ts'
import { caRates, withCa, BENCH_ID } from './measure/ca.ts'
import { rate } from './measure/rate.ts'

const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1] ?? 3) || 3

const rows: Array<{ what: string, perSecond: number }> = []
for (const r of await caRates(seconds)) {
  rows.push({ what: `${r.keyType} issuer: sign leaf (build + sign)`, perSecond: r.signLeafPerSecond })
  rows.push({ what: `${r.keyType} issuer: full issuance (CSR verify + sign + SVID self-check)`, perSecond: r.fullIssuancePerSecond })
}

// The alternative considered: @peculiar/x509 (WebCrypto, needs a Reflect polyfill).
const workload = generateKey('ec-p256')
rows.push(await withCa('ec-p256', async (ca) => {
  px.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px.cryptoProvider.set>[0])
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
  const signingKey = await webcrypto.subtle.importKey('pkcs8', ca.issuerKey.export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign'])
  const publicKey = await webcrypto.subtle.importKey('spki', createPublicKey(workload.privateKey).export({ type: 'spki', format: 'der' }), alg, true, ['verify'])
  const issuerCert = new px.X509Certificate(ca.issuer.der)
  return {
    what: 'ec-p256 issuer: sign leaf with @peculiar/x509 (comparison)',
    perSecond: await rate(async () => await px.X509CertificateGenerator.create({
      serialNumber: '01', issuer: issuerCert.subject, subject: '', notBefore: new Date(), notAfter: new Date(Date.now() + 3_600_000),
      signingAlgorithm: alg, publicKey, signingKey,
      extensions: [
        new px.BasicConstraintsExtension(false, undefined, true),
        new px.KeyUsagesExtension(px.KeyUsageFlags.digitalSignature, true),
        new px.ExtendedKeyUsageExtension(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']),
        new px.SubjectAlternativeNameExtension([{ type: 'url', value: BENCH_ID.toString() }], true)
      ]
    }), seconds)
  }
}))

process.stdout.write(`bench/ca on Node ${process.versions.node}, ${cpus()[0]?.model ?? 'cpu'} (one core: single thread), ${seconds}s per row\n`)
for (const r of rows) process.stdout.write(`${r.what.padEnd(78)} ${Math.round(r.perSecond).toString().padStart(7)} /s\n`)
