import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { IncomingHttpHeaders as H2Headers } from 'node:http2'

// Header rules shared by every hop: what is end-to-end (RFC 9110 7.6.1), how an HTTP/2 header block
// becomes HTTP/1.1 headers and back, and what an HTTP/2 request may not carry (RFC 9113 8.2).

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate', 'http2-settings'])

const NONE: ReadonlySet<string> = new Set()

/**
 * The header names a Connection header lists (hop-by-hop too). Most messages have none, or only
 * keep-alive or close (every node:http answer says keep-alive), which name no header that is not
 * already dropped: no set built for those (it was half of this module's time per request, issue 21).
 */
function connectionListed (value: unknown): ReadonlySet<string> {
  if (value === undefined) return NONE
  const text = String(value)
  if (text.length <= 10) {
    const lower = text.toLowerCase()
    if (lower === 'keep-alive' || lower === 'close') return NONE
  }
  return new Set(text.toLowerCase().split(',').map(s => s.trim()).filter(s => s !== ''))
}

/** Copies end-to-end headers: drops the fixed hop-by-hop set, pseudo-headers, and any header named in Connection. */
export function endToEndHeaders (headers: IncomingHttpHeaders | H2Headers, drop: readonly string[] = []): OutgoingHttpHeaders {
  const listed = connectionListed(headers.connection)
  const out: OutgoingHttpHeaders = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || name.charCodeAt(0) === 58 /* ':' */ || HOP_BY_HOP.has(name) || listed.has(name) || drop.includes(name)) continue
    out[name] = value
  }
  return out
}

/**
 * The same rule for a response as the app's parser hands it over (names and values alternating), in
 * one pass into the object the caller's response is written with (not an object and then a filtered copy of it).
 */
export function endToEndRawHeaders (raw: readonly string[]): OutgoingHttpHeaders {
  let connection: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === 10 && name.toLowerCase() === 'connection') connection = connection === undefined ? raw[i + 1]! : `${connection}, ${raw[i + 1]!}`
  }
  const listed = connectionListed(connection)
  const out: Record<string, string | string[]> = {}
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase()
    if (HOP_BY_HOP.has(name) || listed.has(name)) continue
    const value = raw[i + 1]!
    const had = out[name]
    if (had === undefined) out[name] = value
    else if (Array.isArray(had)) had.push(value)
    else out[name] = [had, value]
  }
  return out
}

/** Headers that RFC 9113 8.2.2 forbids in HTTP/2 (they would mean something else once downgraded to HTTP/1.1). */
const CONNECTION_SPECIFIC = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']

// CR, LF or NUL anywhere in a value: after a downgrade to HTTP/1.1 they would split or end a header line.
const BAD_VALUE = /[\r\n\0]/

/**
 * Why an HTTP/2 request's header block cannot be forwarded, or undefined. nghttp2 already rejects
 * most of these before a stream exists; this is the same rule where JavaScript sees the request, so a
 * header that slipped through (or a future Node that is laxer) is refused with a decision line.
 */
export function h2HeaderProblem (headers: H2Headers): string | undefined {
  for (const name of CONNECTION_SPECIFIC) if (headers[name] !== undefined) return `connection-specific header ${name} in HTTP/2`
  const te = headers.te
  if (te !== undefined && String(te).trim().toLowerCase() !== 'trailers') return 'te other than "trailers" in HTTP/2'
  for (const name in headers) {
    if (name !== name.toLowerCase()) return `upper-case header name ${JSON.stringify(name)}`
    const value = headers[name]
    for (const v of Array.isArray(value) ? value : [value]) if (v !== undefined && BAD_VALUE.test(String(v))) return `CR, LF or NUL in the value of ${name}`
  }
  if (typeof headers[':path'] !== 'string' || typeof headers[':method'] !== 'string') return 'missing :method or :path'
  return undefined
}

/** Whether an HTTP/1.1 request has a body to forward (an HTTP/2 one says so with END_STREAM). */
export const hasBody = (headers: IncomingHttpHeaders): boolean => headers['transfer-encoding'] !== undefined || Number(headers['content-length'] ?? 0) > 0

/** gRPC rides on HTTP/2 with this content type (grpc, grpc+proto, grpc+json, ...). */
export function isGrpc (headers: IncomingHttpHeaders | H2Headers): boolean {
  const ct = headers['content-type']
  return typeof ct === 'string' && ct.startsWith('application/grpc')
}
