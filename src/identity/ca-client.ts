import { request, Client } from 'undici'
import { decodeProtectedHeader } from 'jose'
import { readFileSync } from 'node:fs'
import { GatehouseError } from '../errors.ts'
import { createCsr } from '../x509/csr.ts'
import { generateKey } from '../x509/keys.ts'
import { JOIN_TOKEN_TYP } from '../ca/join-token.ts'
import type { Credentials } from './credentials.ts'
import { connectSvid } from './svid-connect.ts'

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
  try { return decodeProtectedHeader(token).typ === JOIN_TOKEN_TYP ? 'svid' : 'token' } catch { return 'svid' }
}

/** `token`: the token already read for this request (the rotator compares it with a refused one); otherwise the token file is read here. */
export async function requestSvid (opts: CaClientOptions, auth: CaAuth, token?: string): Promise<IssuedResponse> {
  const url = new URL('/v1/svid', opts.url)
  const key = generateKey('ec-p256')
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (auth === 'token') {
    if (opts.tokenFile === undefined) throw new GatehouseError('GH_NO_TOKEN', 401, 'no token file configured')
    headers.authorization = `Bearer ${token ?? readFileSync(opts.tokenFile, 'utf8').trim()}`
  }
  const port = Number(url.port === '' ? 443 : url.port)
  const client = new Client(url.origin, {
    connect: (_o, cb) => {
      connectSvid({ host: url.hostname.replace(/^\[|\]$/g, ''), port, credentials: opts.credentials, expectedId: opts.caId, presentSvid: auth === 'svid', timeoutMs: opts.timeoutMs ?? 5000 },
        (err, socket) => { if (err !== null || socket === undefined) cb(err ?? new Error('no socket'), null); else cb(null, socket) })
    }
  })
  try {
    const res = await request(url, {
      method: 'POST',
      headers,
      body: JSON.stringify({ csr: createCsr(key.privateKey) }),
      dispatcher: client,
      headersTimeout: opts.timeoutMs ?? 10_000,
      bodyTimeout: opts.timeoutMs ?? 10_000
    })
    const body = await res.body.json() as Record<string, string>
    if (res.statusCode !== 200) throw new GatehouseError(body.error ?? 'GH_CA_REFUSED', res.statusCode, `CA refused: ${body.error ?? res.statusCode}: ${body.message ?? ''}`)
    return {
      chainPem: String(body.chain),
      keyPem: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      bundlePem: String(body.bundle),
      spiffeId: String(body.spiffeId),
      expiresAt: String(body.expiresAt)
    }
  } finally {
    await client.close()
  }
}
