import { readFileSync } from 'node:fs'
import { jwtVerify, createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose'
import { request, Agent } from 'undici'
import { TokenInvalidError, JwksUnavailableError } from '../errors.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { CA_AUDIENCE, describeJoseError } from './join-token.ts'

// Kubernetes projected service-account tokens (audience gatehouse-ca), verified against the
// cluster's JWKS (from a file, or fetched from the API server's /openid/v1/jwks). The identity is
// the service account in the token: system:serviceaccount:NS:SA -> spiffe://TD/ns/NS/sa/SA.
// Only pod-bound tokens are accepted: they die with the pod, a legacy secret token never does.

export interface K8sIdentity { id: SpiffeId, namespace: string, serviceAccount: string, pod: string, podUid: string }

interface K8sClaims {
  sub?: string
  'kubernetes.io'?: {
    namespace?: string
    serviceaccount?: { name?: string, uid?: string }
    pod?: { name?: string, uid?: string }
  }
}

const SUB = /^system:serviceaccount:([^:]+):([^:]+)$/
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'PS256']

export interface JwksSource {
  keys: () => Promise<JWTVerifyGetKey>
  /** Drops the cache so the next keys() refetches (after an unknown kid: the issuer rotated its key). */
  refresh?: () => void
}

export function jwksFromFile (file: string): JwksSource {
  const load = (): JWTVerifyGetKey => {
    try { return createLocalJWKSet(JSON.parse(readFileSync(file, 'utf8')) as JSONWebKeySet) } catch (err) {
      throw new JwksUnavailableError(`cannot read JWKS file ${file}: ${(err as Error).message}`)
    }
  }
  let current = load()
  let loadedAt = Date.now()
  return {
    keys: async () => {
      // Re-read at most every 30 s, so a rotated service-account signing key is picked up.
      if (Date.now() - loadedAt > 30_000) { current = load(); loadedAt = Date.now() }
      return current
    },
    refresh: () => { loadedAt = 0 }
  }
}

/** The API server's JWKS over HTTPS (cluster CA and an optional bearer token file), cached for 5 minutes. */
export function jwksFromUrl (url: string, opts: { caFile?: string, tokenFile?: string } = {}): JwksSource {
  const dispatcher = new Agent({ connect: opts.caFile === undefined ? {} : { ca: readFileSync(opts.caFile) } })
  let cached: { at: number, keys: JWTVerifyGetKey } | undefined
  return {
    // At most one forced refetch every 30 s, so unknown-kid tokens cannot make us hammer the API server.
    refresh: () => { if (cached !== undefined && Date.now() - cached.at > 30_000) cached = { ...cached, at: 0 } },
    keys: async () => {
      if (cached !== undefined && Date.now() - cached.at < 300_000) return cached.keys
      const headers: Record<string, string> = { accept: 'application/json' }
      if (opts.tokenFile !== undefined) headers.authorization = `Bearer ${readFileSync(opts.tokenFile, 'utf8').trim()}`
      try {
        const res = await request(url, { headers, dispatcher, headersTimeout: 5000, bodyTimeout: 5000 })
        if (res.statusCode !== 200) { await res.body.dump(); throw new Error(`HTTP ${res.statusCode}`) }
        cached = { at: Date.now(), keys: createLocalJWKSet(await res.body.json() as JSONWebKeySet) }
        return cached.keys
      } catch (err) {
        // Keep using the last good key set rather than failing every attestation during an API blip.
        if (cached !== undefined) return cached.keys
        throw new JwksUnavailableError(`cannot fetch JWKS from ${url}: ${(err as Error).message}`)
      }
    }
  }
}

export class K8sTokenVerifier {
  private readonly jwks: JwksSource
  private readonly issuer: string
  private readonly trustDomain: string

  constructor (opts: { jwks: JwksSource, issuer: string, trustDomain: string }) {
    this.jwks = opts.jwks
    this.issuer = opts.issuer
    this.trustDomain = opts.trustDomain
  }

  async verify (token: string): Promise<K8sIdentity> {
    try {
      return await this.verifyWith(token)
    } catch (err) {
      if (!(err instanceof TokenInvalidError && err.message.includes('not in the JWKS')) || this.jwks.refresh === undefined) throw err
      this.jwks.refresh()
      return await this.verifyWith(token)
    }
  }

  private async verifyWith (token: string): Promise<K8sIdentity> {
    const keys = await this.jwks.keys()
    let claims: K8sClaims
    try {
      ({ payload: claims } = await jwtVerify(token, keys, {
        issuer: this.issuer,
        audience: CA_AUDIENCE,
        algorithms: ALGORITHMS,
        requiredClaims: ['exp', 'sub'],
        clockTolerance: 30
      }))
    } catch (err) {
      throw new TokenInvalidError(`service-account token refused: ${describeJoseError(err)}`)
    }
    const m = SUB.exec(claims.sub ?? '')
    const k8s = claims['kubernetes.io']
    if (m === null || k8s === undefined) throw new TokenInvalidError('service-account token has no system:serviceaccount subject or kubernetes.io claim')
    const [, namespace, serviceAccount] = m as unknown as [string, string, string]
    if (k8s.namespace !== namespace || k8s.serviceaccount?.name !== serviceAccount) {
      throw new TokenInvalidError('service-account token subject disagrees with its kubernetes.io claim')
    }
    if (k8s.pod?.name === undefined || k8s.pod.uid === undefined) throw new TokenInvalidError('service-account token is not bound to a pod')
    let id: SpiffeId
    try { id = SpiffeId.forServiceAccount(this.trustDomain, namespace, serviceAccount) } catch {
      throw new TokenInvalidError('service-account namespace or name cannot form a SPIFFE ID')
    }
    return { id, namespace, serviceAccount, pod: k8s.pod.name, podUid: k8s.pod.uid }
  }
}
