// CA signatures per second on one core, for ECDSA P-256 and RSA-2048 issuers: building and signing a
// leaf (node-forge ASN.1 + node:crypto), and the full issuance path (CSR proof-of-possession check,
// sign, SVID self-check) that `gatehouse ca serve` runs per request.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { initCa, loadCa, type CaMaterial } from '../../src/ca/ca-directory.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { buildCertificate } from '../../src/x509/build.ts'
import { createCsr, verifyCsr } from '../../src/x509/csr.ts'
import { generateKey, type KeyType } from '../../src/x509/keys.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { rate } from './rate.ts'

export interface CaRate { keyType: KeyType, signLeafPerSecond: number, fullIssuancePerSecond: number }

export const BENCH_ID = SpiffeId.parse('spiffe://bench.local/ns/payments/sa/api')

/** Runs `fn` with a fresh CA of `keyType` in a temp dir, removed afterwards. */
export async function withCa<T> (keyType: KeyType, fn: (ca: CaMaterial) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-ca-'))
  try {
    initCa({ dir, trustDomain: 'bench.local', keyType })
    return await fn(loadCa(dir))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function caRates (seconds: number, keyTypes: KeyType[] = ['ec-p256', 'rsa-2048']): Promise<CaRate[]> {
  const workload = generateKey('ec-p256')
  const csr = createCsr(workload.privateKey)
  const out: CaRate[] = []
  for (const keyType of keyTypes) {
    out.push(await withCa(keyType, async (ca) => {
      const issuer = new Issuer(ca)
      const spec = { publicKey: workload.publicKey, signerKey: ca.issuerKey, issuerDer: ca.issuer.der, subject: {}, notBefore: new Date(), notAfter: new Date(Date.now() + 3_600_000), uri: BENCH_ID.toString() }
      return {
        keyType,
        signLeafPerSecond: await rate(() => buildCertificate(spec), seconds),
        fullIssuancePerSecond: await rate(() => issuer.issue({ id: BENCH_ID, publicKey: verifyCsr(csr) }), seconds)
      }
    }))
  }
  return out
}
