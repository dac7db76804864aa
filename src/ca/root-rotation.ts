import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createPrivateKey } from 'node:crypto'
import { RotationRefusedError } from '../errors.ts'
import { buildCertificate } from '../x509/build.ts'
import { derToPem, parseCertificate, pemToDers } from '../x509/certificate.ts'
import { generateKey, type KeyType } from '../x509/keys.ts'
import { FILES } from './ca-directory.ts'

// Staged root rotation, so no sidecar ever meets a certificate it cannot verify:
//   prepare   a new root is made and added to bundle.pem (both roots trusted). Wait until every
//             sidecar has renewed once (one leaf TTL), so all of them trust the new root.
//   activate  a new issuer under the new root replaces the old issuer; leaves are now issued under
//             the new root. Wait one leaf TTL, so every leaf under the old root has expired.
//   retire    the old root leaves bundle.pem.
// Each step writes new files beside the old ones and renames them into place; `ca serve` picks
// them up by polling, like the sidecars do.

const NEXT_ROOT = 'root-next.pem'
const NEXT_ROOT_KEY = 'root-next-key.pem'
const PREVIOUS_ROOT = 'root-previous.pem'
const STATE = 'rotation.json'

export type RotationStep = 'prepare' | 'activate' | 'retire'

interface RotationState { step: RotationStep, at: string }

function atomicWrite (dir: string, name: string, content: string, mode: number): void {
  const tmp = join(dir, `.${name}.tmp`)
  writeFileSync(tmp, content, { mode })
  renameSync(tmp, join(dir, name))
}

function meta (dir: string): { trustDomain: string, keyType?: KeyType } {
  return JSON.parse(readFileSync(join(dir, FILES.meta), 'utf8')) as { trustDomain: string, keyType?: KeyType }
}

function state (dir: string): RotationState | undefined {
  return existsSync(join(dir, STATE)) ? JSON.parse(readFileSync(join(dir, STATE), 'utf8')) as RotationState : undefined
}

const refuse = (message: string): never => { throw new RotationRefusedError(message) }

export function rotateRoot (dir: string, step: RotationStep, opts: { leafTtlMs: number, force?: boolean, now?: Date }): string {
  const now = opts.now ?? new Date()
  const { trustDomain, keyType } = meta(dir)
  const current = state(dir)
  const waited = current === undefined ? Infinity : now.getTime() - new Date(current.at).getTime()
  const tooSoon = (prev: RotationStep): void => {
    if (current?.step !== prev) refuse(`step "${step}" follows "${prev}", but the last step was ${current === undefined ? 'none' : `"${current.step}"`}`)
    if (waited < opts.leafTtlMs && opts.force !== true) {
      refuse(`"${prev}" was ${Math.round(waited / 1000)}s ago; wait one leaf lifetime (${Math.round(opts.leafTtlMs / 1000)}s) so every sidecar has renewed, or pass --force`)
    }
  }
  const caId = `spiffe://${trustDomain}`
  if (step === 'prepare') {
    if (current !== undefined && current.step !== 'retire') refuse(`a rotation is in progress (last step "${current.step}")`)
    const key = generateKey(keyType ?? 'ec-p256')
    const der = buildCertificate({
      publicKey: key.publicKey, signerKey: key.privateKey, subject: { organization: 'Gatehouse', commonName: `Gatehouse root CA ${trustDomain} ${now.toISOString().slice(0, 10)}` },
      notBefore: new Date(now.getTime() - 60_000), notAfter: new Date(now.getTime() + 3650 * 86_400_000), uri: caId, ca: { pathLen: 1 }
    })
    atomicWrite(dir, NEXT_ROOT_KEY, key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600)
    atomicWrite(dir, NEXT_ROOT, derToPem(der), 0o644)
    atomicWrite(dir, FILES.bundle, readFileSync(join(dir, FILES.rootCert), 'utf8') + derToPem(der), 0o644)
  } else if (step === 'activate') {
    tooSoon('prepare')
    const rootPem = readFileSync(join(dir, NEXT_ROOT), 'utf8')
    const rootKey = createPrivateKey(readFileSync(join(dir, NEXT_ROOT_KEY), 'utf8'))
    const root = parseCertificate(pemToDers(rootPem)[0]!)
    const issuer = generateKey(keyType ?? 'ec-p256')
    const issuerDer = buildCertificate({
      publicKey: issuer.publicKey, signerKey: rootKey, issuerDer: root.der, subject: { organization: 'Gatehouse', commonName: `Gatehouse issuer CA ${trustDomain} ${now.toISOString().slice(0, 10)}` },
      notBefore: new Date(now.getTime() - 60_000), notAfter: new Date(Math.min(root.notAfter.getTime(), now.getTime() + 365 * 86_400_000)), uri: caId, ca: { pathLen: 0 }
    })
    // Issuer key before issuer certificate: `ca serve` reloads when either changes and checks they match.
    renameSync(join(dir, FILES.rootCert), join(dir, PREVIOUS_ROOT))
    rmSync(join(dir, FILES.rootKey), { force: true })
    renameSync(join(dir, NEXT_ROOT), join(dir, FILES.rootCert))
    renameSync(join(dir, NEXT_ROOT_KEY), join(dir, FILES.rootKey))
    atomicWrite(dir, FILES.issuerKey, issuer.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600)
    atomicWrite(dir, FILES.issuerCert, derToPem(issuerDer), 0o644)
  } else {
    tooSoon('activate')
    atomicWrite(dir, FILES.bundle, readFileSync(join(dir, FILES.rootCert), 'utf8'), 0o644)
    rmSync(join(dir, PREVIOUS_ROOT), { force: true })
  }
  atomicWrite(dir, STATE, `${JSON.stringify({ step, at: now.toISOString() })}\n`, 0o644)
  return {
    prepare: `new root added to ${FILES.bundle}; wait at least one leaf lifetime, then run --step activate`,
    activate: `leaves are now issued under the new root; wait at least one leaf lifetime, then run --step retire`,
    retire: `old root removed from ${FILES.bundle}; rotation complete`
  }[step]
}
