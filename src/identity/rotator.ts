import type { Logger } from '../log.ts'
import { requestSvid, chooseAuth, readTokenFile, SVID_RENEWAL_REFUSED, type CaAuth, type CaClientOptions } from './ca-client.ts'

// Keeps the sidecar's SVID fresh: renew at half-life with +-10% jitter (so a fleet started together
// does not renew together); on failure retry with exponential backoff and jitter, keep serving with
// the current certificate, and warn. The certificate is only ever replaced by a verified new one.
// When the CA says the SVID will never renew by itself again (renewal chain too old, or an identity
// that needs a service-account token), that is logged once as an error and only a token is tried
// from then on; a token the CA refuses is not sent again, so the sidecar waits for the token file to
// change instead of looping on the CA.

/** Answers to a token that will not change while the token itself does not. */
const TOKEN_REFUSED = new Set(['GH_TOKEN_INVALID', 'GH_TOKEN_REPLAYED', 'GH_IDENTITY_REFUSED', 'GH_UNEXPECTED_ID'])

export interface RotatorOptions extends CaClientOptions {
  logger: Logger
  /** If set, the CA must issue exactly this ID. */
  expectedId?: string
  trustDomain?: string
  minBackoffMs?: number
  maxBackoffMs?: number
  random?: () => number
  onRotated?: () => void
  onFailure?: (code: string) => void
}

export class Rotator {
  private readonly o: RotatorOptions
  private timer: NodeJS.Timeout | undefined
  private failures = 0
  private stopped = false
  /** Settles a start() still waiting for its first SVID: stop() between two attempts ends it. */
  private startWaiting: (() => void) | undefined
  /** The CA refused to renew the current SVID by itself: only the token file can renew it now. */
  private svidRefused = false
  /** Token file content refused since then: not sent again until the file changes. */
  private refusedToken: string | undefined

  constructor (o: RotatorOptions) { this.o = o }

  /** Obtains the first SVID (retrying with backoff until it succeeds or stop() is called), then keeps it fresh. */
  async start (): Promise<void> {
    await new Promise<void>((resolve) => {
      this.startWaiting = resolve
      const first = async (): Promise<void> => {
        if (this.stopped) { resolve(); return }
        if (await this.renew('initial') || this.stopped) { resolve(); return }
        this.timer = setTimeout(() => { void first() }, this.backoffMs())
      }
      void first()
    })
  }

  stop (): void {
    this.stopped = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.startWaiting?.()
  }

  /**
   * Milliseconds until the next renewal: half of the validity remaining when the certificate arrived,
   * +-10%. Measured from receipt, not notBefore, because the CA back-dates notBefore for clock skew
   * (half of "60 s back-dating + 10 s" would already be in the past).
   */
  static renewalDelay (notAfter: Date, now: number, random: () => number): number {
    return Math.max(0, (notAfter.getTime() - now) / 2 * (0.9 + 0.2 * random()))
  }

  private backoffMs (): number {
    const rnd = this.o.random ?? Math.random
    const base = Math.min(this.o.maxBackoffMs ?? 30_000, (this.o.minBackoffMs ?? 500) * 2 ** Math.min(this.failures, 16))
    return Math.round(base * (0.5 + rnd()))
  }

  private async renew (why: 'initial' | 'renewal'): Promise<boolean> {
    const { credentials, logger, tokenFile } = this.o
    let auth: CaAuth = chooseAuth(credentials, tokenFile)
    let token: string | undefined
    if (this.svidRefused) {
      token = readTokenFile(tokenFile)
      // Waiting for a new token costs one file read per backoff period; the CA is not asked meanwhile.
      if (token === undefined || token === this.refusedToken) {
        if (why === 'renewal' && tokenFile !== undefined) this.schedule(this.backoffMs())
        return false
      }
      auth = 'token'
    }
    try {
      const res = await requestSvid(this.o, auth, token)
      if (this.stopped) return true
      if (this.o.expectedId !== undefined && res.spiffeId !== this.o.expectedId) {
        throw Object.assign(new Error(`CA issued ${res.spiffeId}, expected ${this.o.expectedId}`), { code: 'GH_UNEXPECTED_ID' })
      }
      const svid = credentials.installIssued(res.chainPem, res.keyPem, res.bundlePem, this.o.trustDomain)
      this.failures = 0
      this.svidRefused = false
      this.refusedToken = undefined
      const delay = Rotator.renewalDelay(svid.notAfter, Date.now(), this.o.random ?? Math.random)
      logger.info({ event: 'identity.rotated', why, auth, spiffeId: svid.id.toString(), serial: svid.leaf.serialHex, notAfter: svid.notAfter.toISOString(), nextRenewalInMs: Math.round(delay) }, 'workload certificate issued by the CA')
      this.o.onRotated?.()
      this.schedule(delay)
      return true
    } catch (err) {
      this.failures++
      const code = (err as { code?: string }).code ?? 'GH_CA_UNAVAILABLE'
      this.o.onFailure?.(code)
      const current = credentials.current
      const retryInMs = this.backoffMs()
      const line = { event: 'identity.renewal_failed', why, auth, code, reason: (err as Error).message, attempt: this.failures, retryInMs, currentNotAfter: current?.notAfter.toISOString() ?? null }
      if (auth === 'svid' && SVID_RENEWAL_REFUSED.has(code)) {
        this.svidRefused = true
        logger.error({ ...line, retryInMs: tokenFile === undefined ? null : retryInMs, tokenFile: tokenFile ?? null }, tokenFile === undefined
          ? 'the CA will not renew this identity with its SVID; restart the sidecar with a new token (--token-file)'
          : 'the CA will not renew this identity with its SVID; write a new token to the token file (picked up without a restart)')
        if (why === 'renewal' && tokenFile !== undefined) this.schedule(retryInMs)
        return false
      }
      const tokenRefused = this.svidRefused && TOKEN_REFUSED.has(code)
      if (tokenRefused) this.refusedToken = token
      logger.warn(line, tokenRefused
        ? 'the token in the token file was refused; waiting for a new one (the CA is not asked again until the file changes)'
        : current !== undefined && Date.now() < current.notAfter.getTime() ? 'renewal failed; still serving with the current certificate' : 'no valid certificate; retrying')
      if (why === 'renewal') this.schedule(retryInMs)
      return false
    }
  }

  private schedule (ms: number): void {
    if (this.stopped) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    // setTimeout caps at ~24.8 days; renewals are far sooner, but never overflow into an immediate fire.
    this.timer = setTimeout(() => { void this.renew('renewal') }, Math.min(ms, 2 ** 31 - 1))
    this.timer.unref()
  }
}
