import { readFileSync } from 'node:fs'
import { createPrivateKey, constants, type KeyObject } from 'node:crypto'
import { createSecureContext, type SecureContext } from 'node:tls'
import { spkiDer } from '../x509/keys.ts'
import { EventEmitter } from 'node:events'
import { GatehouseError, IdentityInvalidError, NoBundleError, NoIdentityError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { SpiffeId } from '../spiffe/id.ts'
import { TrustBundle } from '../spiffe/bundle.ts'
import { verifyX509Svid } from '../spiffe/svid.ts'
import { pemToDers, parseCertificate, type Certificate } from '../x509/certificate.ts'
import { watchFiles, type FileWatch } from '../file-watch.ts'

// The sidecar's own identity (certificate chain + key) and the trust bundle it verifies peers with.
// Whatever feeds them (static files here; the CA client in the next step), every new value is
// checked before it replaces the current one, and a bad one is logged and ignored: fail closed,
// keep serving with the last good material.

export interface Svid {
  id: SpiffeId
  chainPem: string
  keyPem: string
  privateKey: KeyObject
  leaf: Certificate
  notAfter: Date
  /**
   * The client-side TLS context presenting this SVID, built once: parsing the PEM chain and key for
   * every outbound connection cost more CPU than the handshake's own signature.
   */
  clientContext: () => SecureContext
}

export interface TlsMaterial { cert: string, key: string, ca: string }

export class Credentials extends EventEmitter<{ change: [] }> {
  private svid: Svid | undefined
  private trust: { bundle: TrustBundle, pem: string } | undefined
  /** Bundle certificates per source ("file", "ca"): the effective bundle is their union. */
  private readonly bundleSources = new Map<string, string>()

  get current (): Svid | undefined { return this.svid }
  get bundle (): TrustBundle | undefined { return this.trust?.bundle }

  /** Ready means: an identity that has not expired, and a bundle. */
  ready (now = new Date()): boolean {
    return this.svid !== undefined && this.trust !== undefined && now < this.svid.notAfter
  }

  tls (): TlsMaterial {
    if (this.svid === undefined || this.trust === undefined) throw new NoIdentityError('no workload identity yet')
    return { cert: this.svid.chainPem, key: this.svid.keyPem, ca: this.trust.pem }
  }

  /**
   * Validates then installs the bundle from one source (the --trust-bundle file, the CA). The
   * effective bundle is the union of all sources, so a root added at the CA is trusted at the next
   * renewal even before the mounted file catches up; the current SVID must still verify against it.
   */
  setBundle (pem: string, defaultTrustDomain: string | undefined, source: string, sourceKind = 'file'): void {
    const bundle = this.unionWith(sourceKind, pem, defaultTrustDomain, source)
    if (this.svid !== undefined) verifyX509Svid([this.svid.leaf, ...pemToDers(this.svid.chainPem).slice(1)], bundle)
    this.bundleSources.set(sourceKind, pem)
    this.trust = { bundle, pem: bundle.toPem() }
    this.emit('change')
  }

  /** The effective bundle if `pem` replaced the source `kind` (each source must be valid on its own). Installs nothing. */
  private unionWith (kind: string, pem: string, defaultTrustDomain: string | undefined, source: string): TrustBundle {
    const opts = { ...(defaultTrustDomain === undefined ? {} : { defaultTrustDomain }), source }
    TrustBundle.fromPem(pem, opts)
    const sources = new Map(this.bundleSources).set(kind, pem)
    return TrustBundle.fromPem([...sources.values()].join('\n'), opts)
  }

  /** Validates then installs an SVID: parseable chain, key matches leaf, a valid SVID under the current bundle. */
  setSvid (chainPem: string, keyPem: string): Svid {
    if (this.trust === undefined) throw new NoBundleError('no trust bundle loaded to check the certificate against')
    const svid = checkSvid(chainPem, keyPem, this.trust.bundle)
    this.svid = svid
    this.emit('change')
    return svid
  }

  /**
   * What the CA returns, installed as one step: the new SVID is checked against the new bundle, so a
   * root rotation (new chain under a new root, bundle without the old root) never leaves a moment
   * where the identity and the bundle disagree.
   */
  installIssued (chainPem: string, keyPem: string, bundlePem: string, defaultTrustDomain: string | undefined): Svid {
    const bundle = this.unionWith('ca', bundlePem, defaultTrustDomain, 'CA response')
    const svid = checkSvid(chainPem, keyPem, bundle)
    this.bundleSources.set('ca', bundlePem)
    this.trust = { bundle, pem: bundle.toPem() }
    this.svid = svid
    this.emit('change')
    return svid
  }
}

function checkSvid (chainPem: string, keyPem: string, bundle: TrustBundle): Svid {
  const ders = pemToDers(chainPem)
  if (ders.length === 0) throw new IdentityInvalidError('certificate holds no certificate')
  let privateKey: KeyObject
  try { privateKey = createPrivateKey(keyPem) } catch { throw new IdentityInvalidError('no readable private key') }
  const leaf = parseCertificate(ders[0]!)
  if (!spkiDer(privateKey).equals(spkiDer(leaf.publicKey))) throw new IdentityInvalidError('private key does not match the certificate')
  const verified = verifyX509Svid(ders, bundle)
  let context: SecureContext | undefined
  const clientContext = (): SecureContext => {
    context ??= createSecureContext({ cert: chainPem, key: keyPem, minVersion: 'TLSv1.2', secureOptions: constants.SSL_OP_NO_TICKET })
    return context
  }
  return { id: verified.id, chainPem, keyPem, privateKey, leaf, notAfter: leaf.notAfter, clientContext }
}

export interface StaticFilesOptions {
  certFile: string
  keyFile: string
  bundleFile: string
  trustDomain?: string
  intervalMs: number
  logger: Logger
  onReload?: (what: 'identity' | 'bundle', ok: boolean) => void
}

/** Runs a reload; a failure keeps the current material and is logged and counted, never thrown. */
function guarded (what: 'identity' | 'bundle', fn: () => void, opts: { logger: Logger, onReload?: (what: 'identity' | 'bundle', ok: boolean) => void }) {
  return (): void => {
    try {
      fn()
      opts.onReload?.(what, true)
    } catch (err) {
      opts.onReload?.(what, false)
      opts.logger.error({ event: `${what}.reload_failed`, code: (err as GatehouseError).code ?? 'GH_INTERNAL', reason: (err as Error).message }, `new ${what} rejected; keeping the current one`)
    }
  }
}

/** --trust-bundle: load now (throwing if unusable at start), then reload on change. */
export function watchBundleFile (creds: Credentials, opts: Omit<StaticFilesOptions, 'certFile' | 'keyFile'>): FileWatch {
  const load = (): void => {
    creds.setBundle(readFileSync(opts.bundleFile, 'utf8'), opts.trustDomain, opts.bundleFile)
    opts.logger.info({ event: 'bundle.loaded', source: opts.bundleFile, trustDomains: creds.bundle?.trustDomains }, 'trust bundle loaded')
  }
  load()
  return watchFiles([opts.bundleFile], opts.intervalMs, guarded('bundle', load, opts))
}

/**
 * --cert/--key/--trust-bundle: load now (throwing if unusable at start), then reload on change.
 * A broken new file keeps the old material and logs why.
 */
export function loadStaticFiles (creds: Credentials, opts: StaticFilesOptions): FileWatch[] {
  const bundleWatch = watchBundleFile(creds, opts)
  const loadSvid = (): void => {
    const svid = creds.setSvid(readFileSync(opts.certFile, 'utf8'), readFileSync(opts.keyFile, 'utf8'))
    opts.logger.info({ event: 'identity.loaded', spiffeId: svid.id.toString(), serial: svid.leaf.serialHex, notAfter: svid.notAfter.toISOString(), source: opts.certFile }, 'workload certificate loaded')
  }
  loadSvid()
  return [bundleWatch, watchFiles([opts.certFile, opts.keyFile], opts.intervalMs, guarded('identity', loadSvid, opts))]
}
