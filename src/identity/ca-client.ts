import { decodeProtectedHeader } from 'jose'
import { readFileSync } from 'node:fs'
import { GatehouseError, CaRefusedError, CaUnreachableError, NoTokenError } from '../errors.ts'
import { createCsr } from '../x509/csr.ts'
import { generateKey } from '../x509/keys.ts'
import { JOIN_TOKEN_TYP } from '../spiffe/token-types.ts'
import type { Credentials } from './credentials.ts'
import { caRequest, type CaAnswer } from './ca-http.ts'
import { readErrorBody } from '../error-body.ts'

// Talks to `gatehouse ca serve`: a fresh ECDSA P-256 key per request (generated in memory, never
// written anywhere), a CSR proving possession, and one of two credentials: the token file (re-read
// every time, as Kubernetes refreshes projected tokens) or the current SVID over mTLS. The CA
// server itself must present the expected CA SPIFFE ID under our trust bundle.

export interface CaClientOptions {
  url: string
  credentials: Credentials
  /** SPIFFE ID the CA's serving certificate must carry. */
  caId: string
  tokenFile?: string
  timeoutMs?: number
}

export interface IssuedResponse { chainPem: string, keyPem: string, bundlePem: string, spiffeId: string, expiresAt: string }

export type CaAuth = 'token' | 'svid'

/**
 * The CA's answers meaning "this SVID will never renew by itself again" (renewal chain too old, or an
 * identity that renews only with a service-account token): retrying with the SVID cannot help.
 */
export const SVID_RENEWAL_REFUSED: ReadonlySet<string> = new Set(['GH_RENEWAL_CHAIN_EXPIRED', 'GH_RENEWAL_TOKEN_REQUIRED'])

/** The token file's content, or undefined when there is none or it cannot be read. */
export function readTokenFile (tokenFile: string | undefined): string | undefined {
  if (tokenFile === undefined) return undefined
  try { return readFileSync(tokenFile, 'utf8').trim() } catch { return undefined }
}

/** Which credential to use: a service-account token is re-attested at every renewal (the CA renews a
 * Kubernetes identity with nothing else, so a deleted service account stops renewing); a single-use
 * join token only works once, after which the SVID is, up to the CA's maximum renewal-chain age. */
export function chooseAuth (creds: Credentials, tokenFile: string | undefined, now = new Date()): CaAuth {
  const haveSvid = creds.current !== undefined && now < creds.current.notAfter
  if (tokenFile === undefined) return 'svid'
  if (!haveSvid) return 'token'
  const token = readTokenFile(tokenFile)
  if (token === undefined) return 'svid'
  const typ = jwtTyp(token)
  return typ === null || typ === JOIN_TOKEN_TYP ? 'svid' : 'token'
}

/** The `typ` of a token's JWT header; null when it is not a JWT at all. */
function jwtTyp (token: string): unknown {
  try { return decodeProtectedHeader(token).typ } catch { return null }
}

/**
 * True when `token` is a join token (its JWT header says so): single-use and signed by the CA, so
 * once the CA has refused it, it never will be accepted. Anything else in the token file (a projected
 * service-account token) is the kubelet's to refresh.
 */
export function isJoinToken (token: string | undefined): boolean {
  return token !== undefined && jwtTyp(token) === JOIN_TOKEN_TYP
}

/** `token`: the token already read for this request (the rotator compares it with a refused one); otherwise the token file is read here. */
export async function requestSvid (opts: CaClientOptions, auth: CaAuth, token?: string): Promise<IssuedResponse> {
  const url = new URL('/v1/svid', opts.url)
  const key = generateKey('ec-p256')
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (auth === 'token') {
    if (opts.tokenFile === undefined) throw new NoTokenError('no token file configured')
    headers.authorization = `Bearer ${token ?? readFileSync(opts.tokenFile, 'utf8').trim()}`
  }
  let res: CaAnswer
  try {
    res = await caRequest({ url: opts.url, credentials: opts.credentials, caId: opts.caId, presentSvid: auth === 'svid', connectTimeoutMs: opts.timeoutMs ?? 5000 },
      { method: 'POST', path: url.pathname, headers, body: JSON.stringify({ csr: createCsr(key.privateKey) }), timeoutMs: opts.timeoutMs ?? 10_000 })
  } catch (err) {
    throw unreachable(opts.url, err)
  }
  const text = res.text
  if (res.status !== 200) {
    // The CA's error body (src/error-body.ts); anything else in front of the CA answers without a GH_ code.
    const refused = readErrorBody(text)
    const retryAfter = Number(res.headers['retry-after'])
    const detail = refused === undefined || refused.message === '' ? `HTTP ${res.status} from ${opts.url}` : refused.message
    throw new CaRefusedError(refused?.error ?? 'GH_CA_REFUSED', res.status, detail, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined)
  }
  let body: Record<string, string> | undefined
  try { body = JSON.parse(text) as Record<string, string> } catch { body = undefined }
  if (body === undefined) throw new CaRefusedError('GH_CA_REFUSED', 502, `CA at ${opts.url} answered 200 with a body that is not JSON`)
  return {
    chainPem: String(body.chain),
    keyPem: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    bundlePem: String(body.bundle),
    spiffeId: String(body.spiffeId),
    expiresAt: String(body.expiresAt)
  }
}

/**
 * A failure before the CA answered: connection refused or reset, name not resolved, TLS or answer
 * timeouts. The CA presenting the wrong identity (GH_PEER_IDENTITY) keeps its own code.
 */
function unreachable (url: string, err: unknown): unknown {
  if (err instanceof GatehouseError && err.code !== 'GH_CONNECT_TIMEOUT') return err
  const e = err as (Error & { code?: unknown }) | undefined
  const code = typeof e?.code === 'string' ? e.code : e?.name ?? 'Error'
  const message = e?.message ?? String(err)
  return new CaUnreachableError(url, code, message.includes(code) ? undefined : message, { cause: err })
}
