import { appendFileSync, readFileSync, existsSync } from 'node:fs'
import { randomBytes, createPublicKey, type KeyObject } from 'node:crypto'
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose'
import { TokenInvalidError, TokenReplayedError } from '../errors.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { JOIN_TOKEN_TYP } from '../spiffe/token-types.ts'

// Join tokens: single-use JWTs the CA signs (ES256, its dedicated token key) for workloads that have
// no Kubernetes service-account token (VMs, bootstrapping). The token names the SPIFFE ID it may
// obtain; the CA records each token's jti on first use and refuses it afterwards, across restarts.

export { JOIN_TOKEN_TYP }
export const CA_AUDIENCE = 'gatehouse-ca'

const issuerFor = (trustDomain: string): string => `spiffe://${trustDomain}`

export async function mintJoinToken (opts: { tokenKey: KeyObject, trustDomain: string, id: SpiffeId, ttlMs: number, now?: Date }): Promise<string> {
  if (!opts.id.memberOf(opts.trustDomain) || opts.id.isRoot) {
    throw new TokenInvalidError(`join tokens can only name a workload in trust domain ${opts.trustDomain}`)
  }
  const now = Math.floor((opts.now ?? new Date()).getTime() / 1000)
  return await new SignJWT({})
    .setProtectedHeader({ alg: 'ES256', typ: JOIN_TOKEN_TYP })
    .setIssuer(issuerFor(opts.trustDomain))
    .setAudience(CA_AUDIENCE)
    .setSubject(opts.id.toString())
    .setJti(randomBytes(16).toString('base64url'))
    .setIssuedAt(now)
    .setExpirationTime(now + Math.max(1, Math.round(opts.ttlMs / 1000)))
    .sign(opts.tokenKey)
}

/** jose's error classes carry stable codes; map them to a message that never quotes the token. */
export function describeJoseError (err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token has expired'
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `token claim "${err.claim}" is not acceptable (${err.reason})`
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature does not verify'
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'token is signed by a key not in the JWKS'
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token signature algorithm is not allowed'
  if (err instanceof joseErrors.JOSEError) return `token is not acceptable (${err.code})`
  return 'token is malformed'
}

/** The set of join-token IDs already used, kept in memory and appended to a file so a restart cannot reopen them. */
export class UsedTokenLog {
  private readonly file: string | undefined
  private readonly used = new Map<string, number>()

  constructor (file?: string) {
    this.file = file
    if (file !== undefined && existsSync(file)) {
      const nowSec = Date.now() / 1000
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        const [jti, exp] = line.split(' ')
        if (jti !== undefined && jti !== '' && Number(exp) > nowSec) this.used.set(jti, Number(exp))
      }
    }
  }

  check (jti: string): void {
    if (this.used.has(jti)) throw new TokenReplayedError()
  }

  /** Marks the token used; throws if it already was. Synchronous, so check-and-set cannot interleave. */
  consume (jti: string, expSec: number): void {
    const nowSec = Date.now() / 1000
    for (const [k, exp] of this.used) if (exp <= nowSec) this.used.delete(k)
    this.check(jti)
    // Persist before accepting: if the write fails, the token is refused (fail closed), not reusable.
    if (this.file !== undefined) appendFileSync(this.file, `${jti} ${expSec}\n`, { mode: 0o600 })
    this.used.set(jti, expSec)
  }
}

export class JoinTokenVerifier {
  private readonly publicKey: KeyObject
  private readonly trustDomain: string
  private readonly used: UsedTokenLog

  constructor (opts: { tokenKey: KeyObject, trustDomain: string, used: UsedTokenLog }) {
    this.publicKey = createPublicKey(opts.tokenKey)
    this.trustDomain = opts.trustDomain
    this.used = opts.used
  }

  /**
   * Verifies the token; `consume` marks it used and must be called only once the request is going to
   * be served, so a refused request (rate limit, bad CSR) does not burn the operator's token.
   */
  async verify (token: string): Promise<{ id: SpiffeId, jti: string, consume: () => void }> {
    let payload
    try {
      ({ payload } = await jwtVerify(token, this.publicKey, {
        issuer: issuerFor(this.trustDomain),
        audience: CA_AUDIENCE,
        algorithms: ['ES256'],
        typ: JOIN_TOKEN_TYP,
        requiredClaims: ['jti', 'exp', 'sub']
      }))
    } catch (err) {
      throw new TokenInvalidError(`join token refused: ${describeJoseError(err)}`)
    }
    const id = SpiffeId.tryParse(payload.sub ?? '')
    if (id === undefined || !id.memberOf(this.trustDomain) || id.isRoot) throw new TokenInvalidError('join token names no workload of this trust domain')
    const jti = payload.jti!
    const exp = payload.exp!
    this.used.check(jti)
    return { id, jti, consume: () => { this.used.consume(jti, exp) } }
  }
}
