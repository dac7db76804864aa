// Request-target normalization for authorization and forwarding. The path the policy sees is the path
// the app receives, so a request cannot be judged as one resource and served as another.
//   - origin-form only ("/..."); absolute-form, authority-form and "*" are refused
//   - a fragment ("#"), NUL (raw or %00), an encoded "/" or "\" (%2F, %5C), a ";" path parameter,
//     malformed percent-encoding and any byte outside visible ASCII are refused
//   - "\" becomes "/"; a percent-encoded character that may appear raw in a path segment (unreserved,
//     sub-delims except ";", ":" and "@") is decoded, and every other %XX gets upper-case hex, so one
//     path has one spelling and a rule on "/x:y" also covers "/x%3ay" and "/x%3Ay"; dot segments
//     are resolved (RFC 3986 5.2.4), then repeated slashes merged
//   - the query is kept for forwarding and ignored for matching
// A refusal is a value (reason), not an exception: this runs once per request.

export type Normalized =
  | { ok: true, path: string, segments: string[], query: string | undefined, target: string }
  | { ok: false, reason: string }

const HEX = (c: number): number => (c >= 0x30 && c <= 0x39) ? c - 0x30 : (c >= 0x41 && c <= 0x46) ? c - 0x37 : (c >= 0x61 && c <= 0x66) ? c - 0x57 : -1

/** pchar (RFC 3986 3.3) minus ";": safe to carry decoded, since every server reads it the same either way. */
function decodesInPath (b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) ||
    b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e || // unreserved
    b === 0x21 || b === 0x24 || b === 0x26 || b === 0x27 || b === 0x28 || b === 0x29 || b === 0x2a || b === 0x2b || b === 0x2c || b === 0x3d || // sub-delims but ";"
    b === 0x3a || b === 0x40 // ":" "@"
}

const refuse = (reason: string): Normalized => ({ ok: false, reason })

export function normalizeTarget (target: string): Normalized {
  if (target.charCodeAt(0) !== 0x2f) return refuse(target === '*' ? 'asterisk-form target' : 'target is not origin-form')
  const q = target.indexOf('?')
  const rawPath = q === -1 ? target : target.slice(0, q)
  const query = q === -1 ? undefined : target.slice(q + 1)
  if (target.includes('#')) return refuse('fragment in request target')

  // Empty segments are kept while dot segments are resolved and dropped afterwards, so "/a//../b" is
  // "/a/b" as RFC 3986, WHATWG URL, Envoy and Istio all read it, and only then are slashes merged.
  const segments: string[] = []
  let seg = ''
  let trailingSlash = false
  const endSegment = (): void => {
    if (seg === '..') segments.pop()
    else if (seg !== '.') segments.push(seg)
    // "/a/" and "/a/b/.." both address a directory: keep the trailing slash as RFC 3986 5.2.4 does.
    trailingSlash = seg === '' || seg === '.' || seg === '..'
    seg = ''
  }
  for (let i = 1; i < rawPath.length; i++) {
    const c = rawPath.charCodeAt(i)
    if (c === 0x2f || c === 0x5c) { endSegment(); continue }
    if (c <= 0x20 || c >= 0x7f) return refuse(c === 0 ? 'NUL in path' : 'control, space or non-ASCII byte in path')
    if (c === 0x3b) return refuse('path parameter (;) in path')
    if (c !== 0x25) { seg += rawPath[i]; continue }
    const hi = HEX(rawPath.charCodeAt(i + 1))
    const lo = HEX(rawPath.charCodeAt(i + 2))
    if (hi < 0 || lo < 0) return refuse('malformed percent-encoding in path')
    const b = hi * 16 + lo
    if (b === 0) return refuse('NUL (%00) in path')
    if (b === 0x2f || b === 0x5c) return refuse('encoded slash or backslash (%2F, %5C) in path')
    seg += decodesInPath(b) ? String.fromCharCode(b) : rawPath.slice(i, i + 3).toUpperCase()
    i += 2
  }
  if (rawPath.length === 1) trailingSlash = true
  else endSegment()
  const nonEmpty = segments.filter(s => s !== '')
  const path = nonEmpty.length === 0 ? '/' : `/${nonEmpty.join('/')}${trailingSlash ? '/' : ''}`
  return { ok: true, path, segments: nonEmpty, query, target: query === undefined ? path : `${path}?${query}` }
}

/** RFC 9110 token, upper case only: "get" or "GeT" is refused rather than guessed at (as Istio does). */
const METHOD = /^[A-Z0-9!#$%&'*+.^_`|~-]+$/
export function isValidMethod (method: string): boolean {
  return METHOD.test(method) && /[A-Z]/.test(method)
}
