import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { IncomingHttpHeaders as H2Headers } from 'node:http2'

// Header rules shared by every hop: what is end-to-end (RFC 9110 7.6.1), how an HTTP/2 header block
// becomes HTTP/1.1 headers and back, and what an HTTP/2 request may not carry (RFC 9113 8.2).

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate', 'http2-settings'])

const NONE: ReadonlySet<string> = new Set()

/** Copies end-to-end headers: drops the fixed hop-by-hop set, pseudo-headers, and any header named in Connection. */
export function endToEndHeaders (headers: IncomingHttpHeaders | H2Headers, drop: readonly string[] = []): OutgoingHttpHeaders {
  // Most requests carry no Connection header (or just keep-alive): no set to build then.
  const listed = headers.connection === undefined ? NONE : new Set(String(headers.connection).toLowerCase().split(',').map(s => s.trim()).filter(s => s !== ''))
  const out: OutgoingHttpHeaders = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || name.charCodeAt(0) === 58 /* ':' */ || HOP_BY_HOP.has(name) || listed.has(name) || drop.includes(name)) continue
    out[name] = value
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

/** gRPC rides on HTTP/2 with this content type (grpc, grpc+proto, grpc+json, ...). */
export function isGrpc (headers: IncomingHttpHeaders | H2Headers): boolean {
  const ct = headers['content-type']
  return typeof ct === 'string' && ct.startsWith('application/grpc')
}
