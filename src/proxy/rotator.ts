import type { Logger } from '../log.ts'
import { requestSvid, chooseAuth, type CaClientOptions } from './ca-client.ts'

// Keeps the sidecar's SVID fresh: renew at half-life with +-10% jitter (so a fleet started together
// does not renew together); on failure retry with exponential backoff and jitter, keep serving with
// the current certificate, and warn. The certificate is only ever replaced by a verified new one.

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
    const { credentials, logger } = this.o
    const auth = chooseAuth(credentials, this.o.tokenFile)
    try {
      const res = await requestSvid(this.o, auth)
      if (this.stopped) return true
      if (this.o.expectedId !== undefined && res.spiffeId !== this.o.expectedId) {
        throw Object.assign(new Error(`CA issued ${res.spiffeId}, expected ${this.o.expectedId}`), { code: 'GH_UNEXPECTED_ID' })
      }
      const svid = credentials.installIssued(res.chainPem, res.keyPem, res.bundlePem, this.o.trustDomain)
      this.failures = 0
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
      logger.warn({ event: 'identity.renewal_failed', why, auth, code, reason: (err as Error).message, attempt: this.failures, retryInMs, currentNotAfter: current?.notAfter.toISOString() ?? null }, current !== undefined && Date.now() < current.notAfter.getTime() ? 'renewal failed; still serving with the current certificate' : 'no valid certificate; retrying')
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
