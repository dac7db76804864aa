import { SpiffeIdInvalidError } from '../errors.ts'

// A strict SPIFFE ID parser that gives go-spiffe's verdicts (spiffeid/id.go): lower-case scheme and
// trust domain only, no normalization. Accepting "SPIFFE://Example.org" as another spelling of the
// same identity would let two strings name one workload in policy; we refuse it instead.

const SCHEME = 'spiffe://'
export const MAX_ID_BYTES = 2048 // spec 2.3: implementations MUST support 2048; longer is refused
export const MAX_TRUST_DOMAIN_BYTES = 255

export const reasons = {
  empty: 'cannot be empty',
  scheme: 'scheme is missing or invalid',
  missingTrustDomain: 'trust domain is missing',
  trustDomainChar: 'trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores',
  trustDomainLength: `trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`,
  idLength: `SPIFFE ID is longer than ${MAX_ID_BYTES} bytes`,
  pathChar: 'path segment characters are limited to letters, numbers, dots, dashes, and underscores',
  emptySegment: 'path cannot contain empty segments',
  dotSegment: 'path cannot contain dot segments',
  trailingSlash: 'path cannot have a trailing slash',
  noLeadingSlash: 'path must have a leading slash'
} as const

function isTrustDomainChar (c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f
}

function isPathChar (c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) ||
    c === 0x2d || c === 0x2e || c === 0x5f
}

function fail (reason: string, input: string): never {
  // Quote at most a prefix of the input: IDs come from peers and tokens.
  const shown = input.length > 80 ? `${input.slice(0, 80)}…` : input
  throw new SpiffeIdInvalidError(`invalid SPIFFE ID ${JSON.stringify(shown)}: ${reason}`)
}

/** Returns a reason string when `path` is not a valid SPIFFE ID path ("" is valid: the root). */
export function pathProblem (path: string): string | undefined {
  if (path === '') return undefined
  if (path.charCodeAt(0) !== 0x2f) return reasons.noLeadingSlash
  let segStart = 0
  for (let i = 0; i <= path.length; i++) {
    if (i < path.length && path.charCodeAt(i) !== 0x2f) {
      if (!isPathChar(path.charCodeAt(i))) return reasons.pathChar
      continue
    }
    const seg = path.slice(segStart, i)
    if (seg === '/') return i === path.length ? reasons.trailingSlash : reasons.emptySegment
    if (seg === '/.' || seg === '/..') return reasons.dotSegment
    segStart = i
  }
  return undefined
}

/**
 * Returns a reason string when `name` is not a valid trust domain name. A name that only upper case
 * spoils is told so, with the spelling to use: "must be lower case" says more than the character list.
 */
export function trustDomainProblem (name: string): string | undefined {
  if (name === '') return reasons.missingTrustDomain
  for (let i = 0; i < name.length; i++) {
    if (isTrustDomainChar(name.charCodeAt(i))) continue
    const onlyCase = /^[a-zA-Z0-9._-]+$/.test(name)
    return onlyCase ? `trust domain ${JSON.stringify(name.slice(0, 80))} must be lower case: write ${JSON.stringify(name.slice(0, 80).toLowerCase())} in full` : reasons.trustDomainChar
  }
  if (name.length > MAX_TRUST_DOMAIN_BYTES) return reasons.trustDomainLength
  return undefined
}

export class SpiffeId {
  readonly trustDomain: string
  /** "" for the trust domain's own ID, else "/seg/seg…". */
  readonly path: string

  private constructor (trustDomain: string, path: string) {
    this.trustDomain = trustDomain
    this.path = path
  }

  static parse (input: string): SpiffeId {
    if (input === '') fail(reasons.empty, input)
    if (!input.startsWith(SCHEME)) fail(reasons.scheme, input)
    const rest = input.slice(SCHEME.length)
    let i = 0
    for (; i < rest.length; i++) {
      const c = rest.charCodeAt(i)
      if (c === 0x2f) break
      if (!isTrustDomainChar(c)) fail(reasons.trustDomainChar, input)
    }
    if (i === 0) fail(reasons.missingTrustDomain, input)
    if (i > MAX_TRUST_DOMAIN_BYTES) fail(reasons.trustDomainLength, input)
    const path = rest.slice(i)
    const problem = pathProblem(path)
    if (problem !== undefined) fail(problem, input)
    // Every accepted character is ASCII, so string length is the byte length.
    if (input.length > MAX_ID_BYTES) fail(reasons.idLength, input)
    return new SpiffeId(rest.slice(0, i), path)
  }

  static tryParse (input: string): SpiffeId | undefined {
    try { return SpiffeId.parse(input) } catch { return undefined }
  }

  static fromSegments (trustDomain: string, ...segments: string[]): SpiffeId {
    // A segment holding "/" would silently become two segments: a different identity.
    const bad = segments.find(s => s === '' || s.includes('/'))
    if (bad !== undefined) fail(`path segment ${JSON.stringify(bad)} is empty or holds "/"`, `${SCHEME}${trustDomain}`)
    return SpiffeId.parse(`${SCHEME}${trustDomain}${segments.map(s => `/${s}`).join('')}`)
  }

  /** The Kubernetes convention Istio and Linkerd share: spiffe://TD/ns/NS/sa/SA. */
  static forServiceAccount (trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
    return SpiffeId.fromSegments(trustDomain, 'ns', namespace, 'sa', serviceAccount)
  }

  get isRoot (): boolean { return this.path === '' }

  memberOf (trustDomain: string): boolean { return this.trustDomain === trustDomain }

  equals (other: SpiffeId): boolean { return this.trustDomain === other.trustDomain && this.path === other.path }

  toString (): string { return `${SCHEME}${this.trustDomain}${this.path}` }

  toJSON (): string { return this.toString() }
}

/** A trust domain from a bare name ("example.org") or from any SPIFFE ID in it, as go-spiffe's TrustDomainFromString. */
export function parseTrustDomain (input: string): string {
  if (input.includes(':/')) return SpiffeId.parse(input).trustDomain
  const problem = trustDomainProblem(input)
  if (problem !== undefined) {
    throw new SpiffeIdInvalidError(`invalid trust domain ${JSON.stringify(input.slice(0, 80))}: ${problem}`)
  }
  return input
}
