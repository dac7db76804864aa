import { copyFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createPrivateKey, type KeyObject } from 'node:crypto'
import { CaMissingError, KeyInvalidError, RotationRefusedError, fileUnreadable } from '../errors.ts'
import type { Logger } from '../log.ts'
import { derToPem, parseCertificate } from '../x509/certificate.ts'
import { generateKey, spkiDer, type KeyType } from '../x509/keys.ts'
import { FILES, SKEW_MS, buildIssuerCertificate, keyPem, loadCa, type CaMaterial } from './ca-directory.ts'

// Issuer renewal (`gatehouse ca issuer renew`): offline, with the root key, a new issuer key and
// certificate signed by the same root replace issuer.pem and issuer-key.pem. Every sidecar accepts
// the new issuer at once: it trusts the root, and the CA sends each leaf with its issuer. Leaves from
// the old issuer stay valid until they expire (at most one leaf lifetime), which is the overlap.
// Renewing is also rotating: a new key is made every time.

const DAY = 86_400_000
export const EXPIRY_WARNING_MS = 30 * DAY

export interface RenewedIssuer { serial: string, notAfter: Date, previousSerial: string, archived: string }

function writeAside (dir: string, name: string, content: string, mode: number): void {
  const tmp = join(dir, `.${name}.tmp`)
  writeFileSync(tmp, content, { mode })
  renameSync(tmp, join(dir, name))
}

function readRootKey (dir: string): KeyObject {
  const file = join(dir, FILES.rootKey)
  let pem: string
  try { pem = readFileSync(file, 'utf8') } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fileUnreadable('root key', file, err)
    throw new CaMissingError(`${file} does not exist: renewing the issuer needs the root key; run this where the root key is kept (your offline copy of the CA directory), then copy issuer.pem and issuer-key.pem to the CA`)
  }
  try { return createPrivateKey(pem) } catch (err) {
    throw new KeyInvalidError(`CA file ${file}: not a PEM private key; restore it from your backup of ${dir}`, { cause: err })
  }
}

export function renewIssuer (dir: string, opts: { ttlMs: number, now?: Date }): RenewedIssuer {
  const now = opts.now ?? new Date()
  const ca = loadCa(dir) // a missing or damaged CA is reported as such, before anything is written
  const rootKey = readRootKey(dir)
  if (!spkiDer(rootKey).equals(spkiDer(ca.root.publicKey))) throw new CaMissingError(`${dir}: root-key.pem does not match root.pem`)
  const notAfter = new Date(now.getTime() + opts.ttlMs)
  if (notAfter > ca.root.notAfter) {
    throw new RotationRefusedError(`the new issuer would outlive the root: the root expires at ${ca.root.notAfter.toISOString()}, --ttl ${Math.round(opts.ttlMs / DAY)}d ends at ${notAfter.toISOString()}; rotate the root first (gatehouse ca rotate-root), or give a --ttl that ends before the root does`)
  }
  const { keyType } = JSON.parse(readFileSync(join(dir, FILES.meta), 'utf8')) as { keyType?: KeyType }
  const key = generateKey(keyType ?? 'ec-p256')
  const der = buildIssuerCertificate({
    trustDomain: ca.trustDomain, publicKey: key.publicKey, rootKey, rootDer: ca.root.der,
    notBefore: new Date(now.getTime() - SKEW_MS), notAfter, label: now.toISOString().replace(/\.\d+Z$/, 'Z')
  })
  // The old certificate is kept for the record (its key is not: nothing may sign with it again).
  const archived = join(dir, `issuer-${ca.issuer.serialHex}.pem`)
  if (!existsSync(archived)) copyFileSync(join(dir, FILES.issuerCert), archived)
  // Key before certificate, each written aside and renamed: `ca serve` reloads when it sees both
  // (it checks they match) and keeps issuing from the old issuer until then.
  writeAside(dir, FILES.issuerKey, keyPem(key.privateKey), 0o600)
  writeAside(dir, FILES.issuerCert, derToPem(der), 0o644)
  const issuer = parseCertificate(der)
  return { serial: issuer.serialHex, notAfter: issuer.notAfter, previousSerial: ca.issuer.serialHex, archived }
}

export interface ExpiringCert { cert: 'issuer' | 'root', serial: string, notAfter: Date, daysLeft: number }

/** The CA's issuer and trusted roots that expire within `withinMs` of `now`. */
export function expiringCerts (ca: CaMaterial, now: Date, withinMs = EXPIRY_WARNING_MS): ExpiringCert[] {
  const certs = [{ cert: 'issuer' as const, c: ca.issuer }, ...ca.bundle.authoritiesFor(ca.trustDomain).map(c => ({ cert: 'root' as const, c }))]
  return certs
    .filter(({ c }) => c.notAfter.getTime() - now.getTime() < withinMs)
    .map(({ cert, c }) => ({ cert, serial: c.serialHex, notAfter: c.notAfter, daysLeft: Math.floor((c.notAfter.getTime() - now.getTime()) / DAY) }))
}

/**
 * Logs `ca.issuer_expiring` for each expiring certificate now, then daily (and whenever `check` is
 * called, e.g. after a reload). The gatehouse_ca_cert_expiry_timestamp_seconds gauge says the same.
 */
export function watchExpiry (current: () => CaMaterial, logger: Logger): { check: () => void, stop: () => void } {
  const check = (): void => {
    for (const e of expiringCerts(current(), new Date())) {
      const what = e.cert === 'issuer' ? 'renew it with gatehouse ca issuer renew (deploy/README.md, "Renewing the issuer")' : 'rotate it with gatehouse ca rotate-root'
      logger.warn({ event: 'ca.issuer_expiring', cert: e.cert, serial: e.serial, notAfter: e.notAfter.toISOString(), daysLeft: e.daysLeft }, `the CA's ${e.cert} certificate ${e.daysLeft < 0 ? 'has expired' : `expires in ${e.daysLeft} days`}: ${what}`)
    }
  }
  check()
  const timer = setInterval(check, DAY)
  timer.unref()
  return { check, stop: () => { clearInterval(timer) } }
}
