import type { KeyObject } from 'node:crypto'
import { CaMissingError, CaExpiredError, IdentityRefusedError } from '../errors.ts'
import type { SpiffeId } from '../spiffe/id.ts'
import { leafSpiffeId, checkLeafProfile } from '../spiffe/svid.ts'
import { buildCertificate } from '../x509/build.ts'
import { derToPem, parseCertificate } from '../x509/certificate.ts'
import { assertAcceptableKey } from '../x509/keys.ts'
import type { RenewalOrigin } from '../x509/origin.ts'
import type { CaMaterial } from './ca-directory.ts'

// Turns (authenticated identity, public key) into a workload leaf. The identity is an argument
// here, never read from a CSR; the caller (server or CLI) decides who the requester is.

export const DEFAULT_LEAF_TTL_MS = 3_600_000
/** notBefore is back-dated by this much so a peer whose clock is slightly behind still accepts the leaf. */
export const BACKDATE_MS = 60_000

export interface IssueRequest {
  id: SpiffeId
  publicKey: KeyObject
  ttlMs?: number
  dns?: string[]
  ips?: string[]
  /** Recorded in the leaf (renewal-origin extension); without it the leaf cannot renew by itself at `ca serve`. */
  origin?: RenewalOrigin
}

export interface IssuedSvid {
  id: string
  serial: string
  notBefore: Date
  notAfter: Date
  /** Leaf then issuer, PEM. */
  chainPem: string
  leafDer: Buffer
}

export class Issuer {
  private readonly ca: CaMaterial
  private readonly defaultTtlMs: number
  private readonly clock: () => Date

  constructor (ca: CaMaterial, opts: { defaultTtlMs?: number, clock?: () => Date } = {}) {
    this.ca = ca
    this.defaultTtlMs = opts.defaultTtlMs ?? DEFAULT_LEAF_TTL_MS
    this.clock = opts.clock ?? (() => new Date())
    // The issuer -> root link is checked once here; each leaf is then checked against the SVID profile.
    if (!ca.issuer.x509.checkIssued(ca.root.x509) || !ca.issuer.x509.verify(ca.root.publicKey)) {
      throw new CaMissingError(`${ca.dir}: issuer.pem is not signed by root.pem`)
    }
  }

  get trustDomain (): string { return this.ca.trustDomain }
  get issuerNotAfter (): Date { return this.ca.issuer.notAfter }

  issue (req: IssueRequest): IssuedSvid {
    if (!req.id.memberOf(this.ca.trustDomain)) {
      throw new IdentityRefusedError(`${req.id.toString()} is not in trust domain ${this.ca.trustDomain}`)
    }
    if (req.id.isRoot) throw new IdentityRefusedError('a workload SPIFFE ID needs a path')
    assertAcceptableKey(req.publicKey)
    const now = this.clock()
    const ttl = req.ttlMs ?? this.defaultTtlMs
    // Never beyond the issuer's own expiry: a leaf outliving its chain would fail verification anyway.
    const notAfter = new Date(Math.min(now.getTime() + ttl, this.ca.issuer.notAfter.getTime()))
    if (notAfter <= now) throw new CaExpiredError(`issuer certificate expired at ${this.ca.issuer.notAfter.toISOString()}`)
    const notBefore = new Date(Math.max(now.getTime() - BACKDATE_MS, this.ca.issuer.notBefore.getTime()))
    const leafDer = buildCertificate({
      publicKey: req.publicKey,
      signerKey: this.ca.issuerKey,
      issuerDer: this.ca.issuer.der,
      subject: {},
      notBefore,
      notAfter,
      uri: req.id.toString(),
      ...(req.dns !== undefined && req.dns.length > 0 ? { dns: req.dns } : {}),
      ...(req.ips !== undefined && req.ips.length > 0 ? { ips: req.ips } : {}),
      ...(req.origin === undefined ? {} : { origin: req.origin })
    })
    // The same leaf rules the proxy applies to peers: the CA never hands out what a sidecar would refuse.
    const leaf = parseCertificate(leafDer)
    const id = leafSpiffeId(leaf)
    checkLeafProfile(leaf)
    return {
      id: id.toString(),
      serial: leaf.serialHex,
      // The certificate's own times (whole seconds), so expiresAt never claims a moment past the real expiry.
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      chainPem: derToPem(leafDer) + derToPem(this.ca.issuer.der),
      leafDer
    }
  }
}
