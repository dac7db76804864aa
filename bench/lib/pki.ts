// The certificates of a bench run: one Gatehouse CA (src/ca/ca-directory.ts) in the run's temp dir, and
// ECDSA P-256 SVIDs issued by it (src/ca/issuer.ts) as PEM files. Every TLS target uses the same
// server certificate and the load generator the same client certificate.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { initCa, loadCa } from '../../src/ca/ca-directory.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { generateKey } from '../../src/x509/keys.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'

export const TRUST_DOMAIN = 'bench.local'
export const IDS = {
  server: `spiffe://${TRUST_DOMAIN}/ns/bench/sa/server`,
  client: `spiffe://${TRUST_DOMAIN}/ns/bench/sa/client`,
  caller: `spiffe://${TRUST_DOMAIN}/ns/a/sa/caller`
} as const

export interface CertFiles { cert: string, key: string }
export interface Pki { caDir: string, bundle: string, server: CertFiles, client: CertFiles, caller: CertFiles }

export function makePki (dir: string): Pki {
  const caDir = join(dir, 'ca')
  initCa({ dir: caDir, trustDomain: TRUST_DOMAIN })
  const issuer = new Issuer(loadCa(caDir))
  const issue = (name: keyof typeof IDS): CertFiles => {
    const key = generateKey('ec-p256')
    const svid = issuer.issue({ id: SpiffeId.parse(IDS[name]), publicKey: key.publicKey, ttlMs: 24 * 3_600_000 })
    const files = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) }
    writeFileSync(files.cert, svid.chainPem)
    writeFileSync(files.key, key.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
    return files
  }
  return { caDir, bundle: join(caDir, 'bundle.pem'), server: issue('server'), client: issue('client'), caller: issue('caller') }
}
