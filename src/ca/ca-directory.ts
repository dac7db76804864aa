import { mkdirSync, writeFileSync, readFileSync, existsSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { createPrivateKey, type KeyObject } from 'node:crypto'
import { CaExistsError, CaMissingError, KeyInvalidError, fileUnreadable } from '../errors.ts'
import { SpiffeId, parseTrustDomain } from '../spiffe/id.ts'
import { TrustBundle } from '../spiffe/bundle.ts'
import { buildCertificate } from '../x509/build.ts'
import { parseCertificate, derToPem, pemToDers, type Certificate } from '../x509/certificate.ts'
import { generateKey, spkiDer, type KeyType } from '../x509/keys.ts'

// The CA's material on disk: a long-lived root, an issuer (intermediate) that signs workload leaves,
// and a separate key that signs join tokens (so the certificate-signing key signs nothing else).
// Keys are PKCS#8 PEM, mode 0600, in a 0700 directory; an existing CA is never overwritten.

export const FILES = {
  rootCert: 'root.pem',
  rootKey: 'root-key.pem',
  issuerCert: 'issuer.pem',
  issuerKey: 'issuer-key.pem',
  bundle: 'bundle.pem',
  tokenKey: 'join-token-key.pem',
  meta: 'ca.json',
  usedTokens: 'join-tokens-used.log'
} as const

export interface CaMaterial {
  dir: string
  trustDomain: string
  root: Certificate
  issuer: Certificate
  issuerKey: KeyObject
  tokenKey: KeyObject
  bundle: TrustBundle
  bundlePem: string
}

export interface InitOptions {
  dir: string
  trustDomain: string
  keyType?: KeyType
  rootTtlMs?: number
  issuerTtlMs?: number
  now?: Date
}

const DAY = 86_400_000
/** How far back new CA certificates are dated, for clocks slightly behind ours. */
export const SKEW_MS = 60_000

export function keyPem (key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString()
}

/**
 * The issuer (intermediate) profile: a CA that may sign leaves only (pathLen 0), signed by the root,
 * named for the trust domain. `ca init` makes the first one; `ca issuer renew` its successors, whose
 * common name carries `label` (e.g. the renewal time) so two issuers are told apart by name too.
 */
export function buildIssuerCertificate (o: { trustDomain: string, publicKey: KeyObject, rootKey: KeyObject, rootDer: Buffer, notBefore: Date, notAfter: Date, label?: string }): Buffer {
  return buildCertificate({
    publicKey: o.publicKey, signerKey: o.rootKey, issuerDer: o.rootDer,
    subject: { organization: 'Gatehouse', commonName: `Gatehouse issuer CA ${o.trustDomain}${o.label === undefined ? '' : ` ${o.label}`}` },
    notBefore: o.notBefore, notAfter: o.notAfter, uri: SpiffeId.parse(`spiffe://${o.trustDomain}`).toString(), ca: { pathLen: 0 }
  })
}

export function initCa (opts: InitOptions): { files: string[] } {
  const trustDomain = parseTrustDomain(opts.trustDomain)
  const keyType = opts.keyType ?? 'ec-p256'
  const now = opts.now ?? new Date()
  mkdirSync(opts.dir, { recursive: true, mode: 0o700 })
  const existing = Object.values(FILES).filter(f => existsSync(join(opts.dir, f)))
  if (existing.length > 0) throw new CaExistsError(opts.dir)

  const notBefore = new Date(now.getTime() - SKEW_MS)
  const rootNotAfter = new Date(now.getTime() + (opts.rootTtlMs ?? 3650 * DAY))
  // The issuer never outlives the root (RFC 5280 does not forbid it, but a chain can't be valid past its root).
  const issuerNotAfter = new Date(Math.min(rootNotAfter.getTime(), now.getTime() + (opts.issuerTtlMs ?? 365 * DAY)))
  const caId = SpiffeId.parse(`spiffe://${trustDomain}`).toString()

  const root = generateKey(keyType)
  const rootDer = buildCertificate({
    publicKey: root.publicKey, signerKey: root.privateKey, subject: { organization: 'Gatehouse', commonName: `Gatehouse root CA ${trustDomain}` },
    notBefore, notAfter: rootNotAfter, uri: caId, ca: { pathLen: 1 }
  })
  const issuer = generateKey(keyType)
  const issuerDer = buildIssuerCertificate({ trustDomain, publicKey: issuer.publicKey, rootKey: root.privateKey, rootDer, notBefore, notAfter: issuerNotAfter })
  const tokenKey = generateKey('ec-p256')

  const write = (name: string, content: string, mode: number): void => {
    // 'wx': fail rather than overwrite, even if another process raced us to the file.
    writeFileSync(join(opts.dir, name), content, { mode, flag: 'wx' })
    chmodSync(join(opts.dir, name), mode)
  }
  write(FILES.rootKey, keyPem(root.privateKey), 0o600)
  write(FILES.issuerKey, keyPem(issuer.privateKey), 0o600)
  write(FILES.tokenKey, keyPem(tokenKey.privateKey), 0o600)
  write(FILES.rootCert, derToPem(rootDer), 0o644)
  write(FILES.issuerCert, derToPem(issuerDer), 0o644)
  write(FILES.bundle, derToPem(rootDer), 0o644)
  write(FILES.meta, `${JSON.stringify({ trustDomain, keyType, createdAt: now.toISOString() }, null, 2)}\n`, 0o644)
  return { files: [FILES.bundle, FILES.rootCert, FILES.rootKey, FILES.issuerCert, FILES.issuerKey, FILES.tokenKey, FILES.meta].map(f => join(opts.dir, f)) }
}

/** Loads what issuance needs. The root key stays on disk: day-to-day signing uses the issuer only. */
export function loadCa (dir: string): CaMaterial {
  const read = (name: string): string => {
    try { return readFileSync(join(dir, name), 'utf8') } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ENOTDIR') throw fileUnreadable('CA file', join(dir, name), err)
      throw new CaMissingError(`cannot read ${join(dir, name)}: is ${dir} a CA made by 'gatehouse ca init'?`)
    }
  }
  const readKey = (name: string): KeyObject => {
    const pem = read(name)
    try { return createPrivateKey(pem) } catch (err) {
      throw new KeyInvalidError(`CA file ${join(dir, name)}: not a PEM private key; restore it from your backup of ${dir}`, { cause: err })
    }
  }
  const meta = (() => { try { return JSON.parse(read(FILES.meta)) as { trustDomain: string } } catch (err) { if (err instanceof SyntaxError) throw new CaMissingError(`${join(dir, FILES.meta)}: not valid JSON; is ${dir} a CA made by 'gatehouse ca init'?`); throw err } })()
  const trustDomain = parseTrustDomain(meta.trustDomain)
  const issuerDers = pemToDers(read(FILES.issuerCert))
  const rootDers = pemToDers(read(FILES.rootCert))
  if (issuerDers.length !== 1 || rootDers.length !== 1) throw new CaMissingError(`${dir}: root.pem and issuer.pem must hold one certificate each`)
  const bundlePem = read(FILES.bundle)
  const issuer = parseCertificate(issuerDers[0]!)
  const issuerKey = readKey(FILES.issuerKey)
  if (!spkiDer(issuerKey).equals(spkiDer(issuer.publicKey))) throw new CaMissingError(`${dir}: issuer-key.pem does not match issuer.pem`)
  return {
    dir,
    trustDomain,
    root: parseCertificate(rootDers[0]!),
    issuer,
    issuerKey,
    tokenKey: readKey(FILES.tokenKey),
    bundle: TrustBundle.fromPem(bundlePem, { defaultTrustDomain: trustDomain, source: join(dir, FILES.bundle) }),
    bundlePem
  }
}
