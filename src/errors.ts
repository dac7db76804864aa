// Every failure that crosses a module boundary is a GatehouseError with a stable `code` (what scripts
// and dashboards match on) and the HTTP status it maps to. Messages never carry key or token material.

export class GatehouseError extends Error {
  readonly code: string
  readonly status: number
  constructor (code: string, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.status = status
    this.name = new.target.name
  }

  toJSON (): { error: string, message: string } {
    return { error: this.code, message: this.message }
  }
}

export class ConfigInvalidError extends GatehouseError {
  readonly problems: string[]
  constructor (problems: string[]) {
    super('GH_CONFIG_INVALID', 400, `invalid configuration:\n  - ${problems.join('\n  - ')}`)
    this.problems = problems
  }
}

export class SpiffeIdInvalidError extends GatehouseError {
  constructor (message: string) { super('GH_SPIFFE_ID_INVALID', 400, message) }
}

/** `reason` is a category for logs and metrics: unknown-ca, expired, not-yet-valid, not-svid, foreign-trust-domain, bad-chain, weak-key. */
export class SvidInvalidError extends GatehouseError {
  readonly reason: string
  constructor (reason: string, message: string) {
    super('GH_SVID_INVALID', 403, message)
    this.reason = reason
  }
}

export class PolicyInvalidError extends GatehouseError {
  readonly problems: string[]
  constructor (problems: string[]) {
    super('GH_POLICY_INVALID', 400, `invalid policy:\n  - ${problems.join('\n  - ')}`)
    this.problems = problems
  }
}

export class BundleInvalidError extends GatehouseError {
  constructor (message: string) { super('GH_BUNDLE_INVALID', 400, message) }
}

export class CaExistsError extends GatehouseError {
  constructor (dir: string) { super('GH_CA_EXISTS', 409, `a CA already exists in ${dir}; refusing to overwrite it`) }
}

export class CaMissingError extends GatehouseError {
  constructor (message: string) { super('GH_CA_MISSING', 500, message) }
}

export class CsrInvalidError extends GatehouseError {
  constructor (message: string) { super('GH_CSR_INVALID', 400, message) }
}

export class KeyRefusedError extends GatehouseError {
  constructor (message: string) { super('GH_KEY_REFUSED', 400, message) }
}

export class TokenInvalidError extends GatehouseError {
  constructor (message: string) { super('GH_TOKEN_INVALID', 401, message) }
}

export class TokenReplayedError extends GatehouseError {
  constructor () { super('GH_TOKEN_REPLAYED', 401, 'join token has already been used') }
}

export class RateLimitedError extends GatehouseError {
  readonly retryAfterSeconds: number
  constructor (retryAfterSeconds: number) {
    super('GH_RATE_LIMITED', 429, 'too many issuance requests for this identity')
    this.retryAfterSeconds = retryAfterSeconds
  }
}

export class BadRequestError extends GatehouseError {
  constructor (message: string) { super('GH_BAD_REQUEST', 400, message) }
}

export class BodyTooLargeError extends GatehouseError {
  constructor (limit: number) { super('GH_BODY_TOO_LARGE', 413, `request body is larger than ${limit} bytes`) }
}

export class UnsupportedMediaTypeError extends GatehouseError {
  constructor (expected: string) { super('GH_UNSUPPORTED_MEDIA_TYPE', 415, `content-type must be ${expected}`) }
}

export class NotFoundError extends GatehouseError {
  constructor () { super('GH_NOT_FOUND', 404, 'no such endpoint') }
}

export class MethodNotAllowedError extends GatehouseError {
  constructor () { super('GH_METHOD_NOT_ALLOWED', 405, 'method not allowed') }
}

/** Wraps anything unexpected so callers still get a stable code; the cause stays in the operational log only. */
export function asGatehouseError (err: unknown): GatehouseError {
  if (err instanceof GatehouseError) return err
  return new GatehouseError('GH_INTERNAL', 500, 'internal error', { cause: err })
}
