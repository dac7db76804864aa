import { decodeProtectedHeader } from 'jose'
import { TokenInvalidError } from '../errors.ts'
import type { SpiffeId } from '../spiffe/id.ts'
import type { RenewalOrigin } from '../x509/origin.ts'
import type { JoinTokenVerifier } from './join-token.ts'
import { JOIN_TOKEN_TYP } from '../spiffe/token-types.ts'
import type { K8sTokenVerifier } from './k8s-token.ts'

// Who is asking? One of: a single-use join token, a Kubernetes projected service-account token, or
// (for renewal) the SVID the caller already holds, presented as its TLS client certificate.
// The answer is an identity and how it was proven; the CSR has no say in it. An SVID also brings
// the origin its leaf records (renewal.ts decides whether that origin may renew).

export type Attestation =
  | { method: 'join-token', id: SpiffeId, jti: string, consume: () => void }
  | { method: 'k8s-sa-token', id: SpiffeId, pod: string, podUid: string }
  | { method: 'svid', id: SpiffeId, serial: string, origin: RenewalOrigin | undefined }

export class Attestor {
  private readonly join: JoinTokenVerifier
  private readonly k8s: K8sTokenVerifier | undefined

  constructor (opts: { join: JoinTokenVerifier, k8s?: K8sTokenVerifier }) {
    this.join = opts.join
    this.k8s = opts.k8s
  }

  async fromBearer (token: string): Promise<Attestation> {
    let typ: string | undefined
    try { typ = decodeProtectedHeader(token).typ } catch { throw new TokenInvalidError('bearer token is not a JWT') }
    // The header only routes the token to a verifier; each verifier checks its own key and claims.
    if (typ === JOIN_TOKEN_TYP) return { method: 'join-token', ...await this.join.verify(token) }
    if (this.k8s === undefined) throw new TokenInvalidError('bearer token is not a join token and service-account tokens are not configured')
    const k = await this.k8s.verify(token)
    return { method: 'k8s-sa-token', id: k.id, pod: `${k.namespace}/${k.pod}`, podUid: k.podUid }
  }
}
