import { SpiffeId, trustDomainProblem } from '../spiffe/id.ts'
import { normalizeTarget } from './normalize.ts'

// The pattern language of policies (and of quarantine entries): callers as SPIFFE IDs or patterns
// (`spiffe://td/ns/*/sa/app`, a final `**` for any depth), paths as normalized segments with the
// same wildcards. Validation (for load.ts) and matching (for compile.ts and decide.ts) live here,
// below both, so loading and compiling a policy do not import each other.

const ANY_ONE = '*'
const ANY_DEPTH = '**'

export interface SegmentPattern { segments: string[], anyDepth: boolean }

export function splitPattern (path: string): SegmentPattern {
  const segments = path.split('/').slice(1)
  const anyDepth = segments.at(-1) === ANY_DEPTH
  return { segments: anyDepth ? segments.slice(0, -1) : segments, anyDepth }
}

/** Validation for load.ts: "spiffe://TD/seg/*" ("*" one segment, final "**" any depth). */
export function callerPatternProblem (p: string): string | undefined {
  const m = /^spiffe:\/\/([^/]+)(\/.*)?$/.exec(p)
  if (m === null) return 'expected a SPIFFE ID or pattern like spiffe://cluster.local/ns/billing/*'
  if (trustDomainProblem(m[1]!) !== undefined) return m[1]!.includes('*') ? 'the trust domain of a caller pattern must be written out in full' : `the ${trustDomainProblem(m[1]!)!}`
  const segs = (m[2] ?? '').split('/').slice(1)
  if (segs.length === 0) return 'a caller needs a path (spiffe://TD/** for every workload of a trust domain)'
  for (const [i, s] of segs.entries()) {
    if (s === ANY_DEPTH && i !== segs.length - 1) return '"**" may only be the last segment'
    if (s === ANY_ONE || s === ANY_DEPTH) continue
    if (SpiffeId.tryParse(`spiffe://${m[1]!}/${s}`) === undefined) return `segment "${s}" is not valid in a SPIFFE ID`
  }
  return undefined
}

function normalizedSegment (s: string): string {
  if (s === ANY_ONE || s === ANY_DEPTH) return s
  const n = normalizeTarget(`/${s}`)
  return n.ok ? n.path.slice(1) : s
}

/** Validation for load.ts: "/v1/charges", "/v1/*\/items", "/v1/**". Patterns are in normalized form. */
export function pathPatternProblem (p: string): string | undefined {
  if (!p.startsWith('/')) return 'expected a path starting with "/"'
  const segs = p.split('/').slice(1)
  for (const [i, s] of segs.entries()) {
    if (s === ANY_DEPTH && i !== segs.length - 1) return '"**" may only be the last segment'
    if (s === '' && i !== segs.length - 1) return 'empty segment ("//"): paths are matched after merging slashes'
    if (s === '.' || s === '..') return 'dot segments never match: paths are matched after resolving them'
    if (/[?#;\\\s]/.test(s) || /%(2f|5c|00)/i.test(s)) return 'a path pattern holds no query, fragment, ";", "\\", space or encoded slash'
    if (s !== ANY_ONE && s !== ANY_DEPTH && s.includes('*')) return '"*" must be a whole segment'
    // Requests are matched in normalized form ("/%7Euser" arrives as "/~user", "%3a" as ":", other
    // escapes upper-cased), so a pattern spelled otherwise would never match: a deny that denies nothing.
    if (normalizedSegment(s) !== s) return `write this segment as "${normalizedSegment(s)}": paths are matched in normalized form`
  }
  // Wildcards match segments, and a request's segments never include the empty one after a final "/".
  if (p.endsWith('/') && p.includes('*')) return 'a pattern with "*" cannot end in "/" (it would never match)'
  return undefined
}

/**
 * Segment match: "*" is exactly one segment; a final "**" is any depth, including none
 * ("/admin/**" covers "/admin" too, so a deny on it cannot be sidestepped by dropping the slash).
 */
export function matchSegments (pattern: SegmentPattern, segments: readonly string[]): boolean {
  const n = pattern.segments.length
  if (pattern.anyDepth ? segments.length < n : segments.length !== n) return false
  for (let i = 0; i < n; i++) {
    const p = pattern.segments[i]!
    if (p !== ANY_ONE && p !== segments[i]) return false
  }
  return true
}

/**
 * Exact paths match with or without one trailing slash: most frameworks route "/admin/" to "/admin",
 * so a deny on "/admin" must cover both.
 */
export function exactPathKey (path: string): string {
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path
}
