import { decodeJwt } from 'jose'
import type { Logger } from '../log.ts'
import { GatehouseError, CaRefusedError } from '../errors.ts'
import { requestSvid, chooseAuth, readTokenFile, isJoinToken, SVID_RENEWAL_REFUSED, type CaAuth, type CaClientOptions } from './ca-client.ts'

// Keeps the sidecar's SVID fresh: renew at half-life with +-10% jitter (so a fleet started together
// does not renew together); on failure retry with exponential backoff and jitter, keep serving with
// the current certificate, and warn. The certificate is only ever replaced by a verified new one.
// When the CA says the SVID will never renew by itself again (renewal chain too old, or an identity
// that needs a service-account token), that is logged once as an error and only a token is tried
// from then on; a token the CA refuses is not sent again, so the sidecar waits for the token file to
// change instead of looping on the CA.
//
// Transient failures (CA unreachable, 5xx, 429 rate limit: Retry-After is honoured) are retried with
// backoff, at start as at renewal. A permanent refusal (a 4xx: token replayed, expired or invalid,
// identity refused...) is logged at error level with what to do, and a renewal still keeps the
// current certificate. At start, a refused join token is final: it is single-use and signed by the
// CA, so start() fails with the CA's code and what to do instead of asking again forever (`gatehouse
// proxy` exits 1). A service-account token is retried (the kubelet rewrites it), and so is a join
// token this rotator itself spent (the CA issued, the certificate was refused here: GH_UNEXPECTED_ID).

/** Answers to a token that will not change while the token itself does not. */
const TOKEN_REFUSED = new Set(['GH_TOKEN_INVALID', 'GH_TOKEN_REPLAYED', 'GH_IDENTITY_REFUSED', 'GH_UNEXPECTED_ID'])

/** Asking again with the same credential cannot succeed: a 4xx from the CA (not 408 or 429), or the wrong ID issued. */
function isPermanent (err: unknown): boolean {
  return err instanceof CaRefusedError ? err.permanent : (err as { code?: unknown }).code === 'GH_UNEXPECTED_ID'
}

/** The SPIFFE ID a join token names, unverified: only to write the command that makes a new one. */
function tokenSubject (token: string | undefined): string | undefined {
  try { const sub = token === undefined ? undefined : decodeJwt(token).sub; return typeof sub === 'string' ? sub : undefined } catch { return undefined }
}

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
  /** The last join token the CA issued for: a replay of it is our own doing, not a stale token. */
  private spentToken: string | undefined
  /** When the next attempt runs after a failure (backoff, or the CA's Retry-After if longer). */
  private retryInMs = 0

  constructor (o: RotatorOptions) { this.o = o }

  /**
   * Obtains the first SVID (retrying transient failures with backoff until it succeeds or stop() is
   * called), then keeps it fresh. Rejects, and stops, when the CA refuses the join token for good.
   */
  async start (): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.startWaiting = resolve
      const first = async (): Promise<void> => {
        if (this.stopped) { resolve(); return }
        let done: boolean
        try { done = await this.renew('initial') } catch (err) { reject(err); this.stop(); return }
        if (done || this.stopped) { resolve(); return }
        this.timer = setTimeout(() => { void first() }, this.retryInMs)
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
    if (auth === 'token') token ??= readTokenFile(tokenFile)
    try {
      const res = await requestSvid(this.o, auth, token)
      if (this.stopped) return true
      if (auth === 'token' && isJoinToken(token)) this.spentToken = token
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
      const permanent = isPermanent(err)
      // At start nothing is served yet: a refusal that asking again cannot change ends the start.
      if (why === 'initial' && permanent && (tokenFile === undefined || (auth === 'token' && isJoinToken(token) && token !== this.spentToken))) {
        throw this.finalRefusal(err as GatehouseError, code, token)
      }
      const current = credentials.current
      const retryAfterMs = err instanceof CaRefusedError && err.retryAfterSeconds !== undefined ? err.retryAfterSeconds * 1000 : 0
      const retryInMs = this.retryInMs = Math.max(this.backoffMs(), retryAfterMs)
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
      const serving = current !== undefined && Date.now() < current.notAfter.getTime()
      if (tokenRefused) {
        logger.warn(line, 'the token in the token file was refused; waiting for a new one (the CA is not asked again until the file changes)')
      } else if (permanent) {
        logger.error({ ...line, whatToDo: this.whatToDo(code, token) }, serving
          ? 'the CA refused to renew this identity; still serving with the current certificate until it expires'
          : 'the CA refused to issue a certificate; retrying')
      } else {
        logger.warn(line, serving ? 'renewal failed; still serving with the current certificate' : 'no valid certificate; retrying')
      }
      if (why === 'renewal') this.schedule(retryInMs)
      return false
    }
  }

  /** What an operator does about a permanent refusal: one clause, with the command to run. */
  private whatToDo (code: string, token: string | undefined): string {
    const file = this.o.tokenFile ?? 'FILE'
    const newToken = `gatehouse ca token --dir DIR --spiffe-id ${this.o.expectedId ?? tokenSubject(token) ?? 'ID'} > ${file}`
    if (this.o.tokenFile === undefined) return `give --token-file FILE with a join token (${newToken})`
    if (code === 'GH_UNEXPECTED_ID') return `write a join token for ${this.o.expectedId ?? 'the expected ID'} to ${file}, or correct --spiffe-id`
    if (code === 'GH_IDENTITY_REFUSED') return `make a new token for a workload of the CA's trust domain: gatehouse ca token --dir DIR --spiffe-id spiffe://TRUST_DOMAIN/ns/NS/sa/SA > ${file}`
    if (code.startsWith('GH_TOKEN_') && token !== undefined && !isJoinToken(token)) return `check the service-account token in ${file}: its audience must be gatehouse-ca, and 'ca serve --issuer' and --jwks-file/--jwks-url must match the cluster (the file is read again at each attempt)`
    if (code.startsWith('GH_TOKEN_') || code.startsWith('GH_RENEWAL_')) return `make a new token: ${newToken}`
    return `check that --ca-url ${this.o.url} is a 'gatehouse ca serve' of the same version as this sidecar (the CA's log says more: event svid.refused)`
  }

  /** The error start() fails with: the CA's code, why, and what to do, in one line. */
  private finalRefusal (err: GatehouseError, code: string, token: string | undefined): GatehouseError {
    const detail = err instanceof CaRefusedError ? err.detail : err.message
    const what = this.o.tokenFile === undefined ? 'this sidecar (no --token-file, no certificate to renew)' : `the join token in ${this.o.tokenFile}`
    const single = code === 'GH_TOKEN_REPLAYED' ? ' (join tokens are single-use)' : ''
    return new GatehouseError(code, err.status ?? 401, `the CA at ${this.o.url} refused ${what}: ${detail}${single}; ${this.whatToDo(code, token)}, then start again`, { cause: err })
  }

  private schedule (ms: number): void {
    if (this.stopped) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    // setTimeout caps at ~24.8 days; renewals are far sooner, but never overflow into an immediate fire.
    this.timer = setTimeout(() => { void this.renew('renewal') }, Math.min(ms, 2 ** 31 - 1))
    this.timer.unref()
  }
}
