// Every failure that crosses a module boundary is a GatehouseError with a stable `code` (what scripts
// and dashboards match on) and the HTTP status it maps to. Messages never carry key or token material.
// Every refusal an HTTP server of Gatehouse answers with has its class here too; src/error-body.ts
// turns either into the one JSON body, {"error": code, "message", "reason"?, "requestId"?}.

export class GatehouseError extends Error {
  readonly code: string
  readonly status: number
  constructor (code: string, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.status = status
    this.name = new.target.name
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

/**
 * An identity first issued from a join token has renewed with its SVID alone for longer than the
 * CA allows (`ca serve --max-renewal-chain-age`): only a new join token starts a new chain.
 */
export class RenewalChainExpiredError extends GatehouseError {
  constructor (id: string, startedAt: Date, maxAge: string) {
    super('GH_RENEWAL_CHAIN_EXPIRED', 401, `${id} was first issued from a join token at ${startedAt.toISOString()}, and has renewed with its SVID alone for longer than the maximum of ${maxAge} (ca serve --max-renewal-chain-age); a new join token is needed: gatehouse ca token --spiffe-id ${id}, written to the sidecar's token file`)
  }
}

/** The presented SVID cannot renew by itself: its identity was attested by a service-account token, or it records no origin. */
export class RenewalTokenRequiredError extends GatehouseError {
  constructor (message: string) { super('GH_RENEWAL_TOKEN_REQUIRED', 401, message) }
}

export class RateLimitedError extends GatehouseError {
  readonly retryAfterSeconds: number
  constructor (retryAfterSeconds: number) {
    super('GH_RATE_LIMITED', 429, 'too many issuance requests for this identity')
    this.retryAfterSeconds = retryAfterSeconds
  }
}

/**
 * The CA could not be reached: connection refused or reset, name not resolved, or no answer in time.
 * The message names the URL and the system code (ECONNREFUSED, ENOTFOUND, ETIMEDOUT, ...). Transient:
 * the sidecar keeps retrying with backoff.
 */
export class CaUnreachableError extends GatehouseError {
  readonly systemCode: string
  constructor (url: string, systemCode: string, detail?: string, options?: { cause?: unknown }) {
    super('GH_CA_UNREACHABLE', 502, `cannot reach the CA at ${url} (${systemCode}${detail === undefined ? '' : `: ${detail}`}); check --ca-url, that 'gatehouse ca serve' is running and listening there, and the network path to it`, options)
    this.systemCode = systemCode
  }
}

/**
 * The CA answered a request for an SVID with an error: `code` is the CA's own (GH_TOKEN_REPLAYED,
 * GH_RATE_LIMITED, ...), or GH_CA_REFUSED when its answer carried none (the message then says what it was). `permanent` when asking again
 * with the same credential cannot succeed (a 4xx other than 408 and 429); `retryAfterSeconds` from
 * the CA's Retry-After, if it sent one.
 */
export class CaRefusedError extends GatehouseError {
  /** The CA's own message (or what stood in for it). */
  readonly detail: string
  readonly permanent: boolean
  readonly retryAfterSeconds: number | undefined
  constructor (code: string, status: number, detail: string, retryAfterSeconds?: number) {
    super(code, status, `CA refused: ${code}: ${detail}`)
    this.detail = detail
    this.permanent = status >= 400 && status < 500 && status !== 408 && status !== 429
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
  constructor (message = 'method not allowed') { super('GH_METHOD_NOT_ALLOWED', 405, message) }
}

// Refusals the sidecar, its admin listener and the metrics listener answer with (src/error-body.ts
// writes them). The sidecar's data path makes each instance once and refuses with it as a value.

/** The sidecar denied the request: its policy, no verified peer, or a quarantined caller. A decision: its line (the body's requestId) says why. */
export class ForbiddenError extends GatehouseError {
  constructor (message = 'denied by policy') { super('GH_FORBIDDEN', 403, message) }
}

/** The caller's certificate expired after its connection was made (continuous verification): the connection is closed. */
export class PeerCertExpiredError extends GatehouseError {
  constructor () { super('GH_PEER_CERT_EXPIRED', 401, 'the caller\'s certificate has expired since the connection was made; connect again with a fresh SVID') }
}

/** The sidecar has no policy or no identity loaded yet: it is not ready, and refuses every request. */
export class NotReadyError extends GatehouseError {
  constructor (message = 'not ready: no policy or identity loaded') { super('GH_NOT_READY', 503, message) }
}

/** The request's header list is over the limit (`--max-header-size`). */
export class HeadersTooLargeError extends GatehouseError {
  constructor (message = 'the request headers are too large') { super('GH_HEADERS_TOO_LARGE', 431, message) }
}

/** The request's headers or body did not arrive within `--headers-timeout` / `--request-timeout`. */
export class RequestTimeoutError extends GatehouseError {
  constructor () { super('GH_REQUEST_TIMEOUT', 408, 'the request did not arrive in time') }
}

/** An authorized `Upgrade` to a protocol the sidecar does not relay (`--upgrade-protocols`). */
export class UpgradeNotAllowedError extends GatehouseError {
  constructor (message = 'this upgrade is not relayed') { super('GH_UPGRADE_NOT_ALLOWED', 400, message) }
}

/** The app (inbound), or the destination's sidecar (outbound), cannot be reached. */
export class UpstreamUnavailableError extends GatehouseError {
  constructor (message = 'the app cannot be reached') { super('GH_UPSTREAM_UNAVAILABLE', 502, message) }
}

/** The app (inbound), or the destination (outbound), did not start answering within `--upstream-timeout`. */
export class UpstreamTimeoutError extends GatehouseError {
  constructor (message = 'the app did not answer in time') { super('GH_UPSTREAM_TIMEOUT', 504, message) }
}

/** Outbound: the request target is not an `http://` URL. */
export class OutboundBadTargetError extends GatehouseError {
  constructor (message: string) { super('GH_OUTBOUND_BAD_TARGET', 400, message) }
}

/** Outbound: the host is not in the routes file. */
export class OutboundUnknownDestinationError extends GatehouseError {
  constructor (message: string) { super('GH_OUTBOUND_UNKNOWN_DESTINATION', 403, message) }
}

/** Outbound: a `CONNECT` to a host that is neither routed nor on `--allow-connect`. */
export class OutboundConnectRefusedError extends GatehouseError {
  constructor (message: string) { super('GH_OUTBOUND_CONNECT_REFUSED', 403, message) }
}

/** The sidecar's admin listener serves only its probe paths to a connection that is not loopback on both ends. */
export class LoopbackOnlyError extends GatehouseError {
  constructor () { super('GH_LOOPBACK_ONLY', 403, 'only the probe paths answer off loopback') }
}

/** The Prometheus registry could not render the metrics. */
export class MetricsUnavailableError extends GatehouseError {
  constructor (options?: ErrorOptions) { super('GH_METRICS_UNAVAILABLE', 500, 'the metrics cannot be rendered', options) }
}

/** The command line itself is wrong (an unknown command): exit status 2, like a configuration error. */
export class UsageError extends GatehouseError {
  constructor (message: string) { super('GH_USAGE', 400, message) }
}

/** A file named on the command line (or in config) cannot be read: the message names the flag and what to do. */
export class FileUnreadableError extends GatehouseError {
  constructor (message: string, options?: { cause?: unknown }) { super('GH_FILE_UNREADABLE', 400, message, options) }
}

/** A file holds no usable private key (garbage, encrypted, or not the certificate's key). */
export class KeyInvalidError extends GatehouseError {
  constructor (message: string, options?: { cause?: unknown }) { super('GH_KEY_INVALID', 400, message, options) }
}

/** A file holds no usable certificate. */
export class CertInvalidError extends GatehouseError {
  constructor (message: string) { super('GH_CERT_INVALID', 400, message) }
}

/** A listener could not open (port in use, privileged port, address not on this machine). */
export class ListenError extends GatehouseError {
  constructor (message: string, options?: { cause?: unknown }) { super('GH_LISTEN_FAILED', 500, message, options) }
}

/**
 * The decision log cannot be written (disk full, file size limit, closed stdout): the sidecar forwards
 * nothing it cannot log, so the request is refused with this until writing works again.
 */
export class DecisionLogUnavailableError extends GatehouseError {
  constructor (reason: string, options?: { cause?: unknown }) { super('GH_DECISION_LOG_UNAVAILABLE', 503, `the decision log cannot be written (${reason}): nothing is forwarded that cannot be logged`, options) }
}

/**
 * One line for a file that could not be read: `label` names where the path came from (a flag such as
 * "--key", or "policy file"), and the message says what to do. Never includes the file's content.
 */
export function fileUnreadable (label: string, file: string, err: unknown): FileUnreadableError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  const where = `${label} ${file}`
  const why = code === 'ENOENT' || code === 'ENOTDIR'
    ? 'no such file; check the path'
    : code === 'EISDIR'
      ? 'is a directory, not a file; give the path of the file itself'
      : code === 'EACCES' || code === 'EPERM'
        ? `permission denied; make it readable by this user${typeof process.getuid === 'function' ? ` (uid ${process.getuid()})` : ''}, e.g. with chmod or chown`
        : `cannot be read (${code ?? (err as Error | undefined)?.message ?? String(err)}); check the file`
  return new FileUnreadableError(`${where}: ${why}`, { cause: err })
}

/** The CA refuses to issue or renew an SVID for a quarantined identity (docs/quarantine.md). */
export class QuarantinedError extends GatehouseError {
  constructor (id: string, reason: string) {
    super('GH_QUARANTINED', 403, `${id} is quarantined (${reason}); 'gatehouse ca quarantine remove --spiffe-id ${id}' releases it`)
  }
}

/** The CA refuses a quarantine report (docs/quarantine.md): about the reporter itself, an allow-listed identity, or malformed. */
export class ReportRefusedError extends GatehouseError {
  constructor (message: string) {
    super('GH_REPORT_REFUSED', 403, message)
  }
}

/** Input the injector cannot work on: a malformed pod, workload or manifest. */
export class InjectInvalidError extends GatehouseError {
  constructor (message: string) { super('GH_INJECT_INVALID', 400, message) }
}

/** The CA's issuer or root has expired: it issues nothing until renewed. */
export class CaExpiredError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_CA_EXPIRED', 503, message, options) }
}

/** An mTLS connection to a peer did not complete in time. */
export class ConnectTimeoutError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_CONNECT_TIMEOUT', 502, message, options) }
}

/** An identity presented to the CA is malformed (a token's claims, a SPIFFE ID). */
export class IdentityInvalidError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_IDENTITY_INVALID', 400, message, options) }
}

/** The CA will not issue this identity (another trust domain, no path). */
export class IdentityRefusedError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_IDENTITY_REFUSED', 403, message, options) }
}

/** The Kubernetes service-account issuer's keys cannot be fetched. */
export class JwksUnavailableError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_JWKS_UNAVAILABLE', 503, message, options) }
}

/** The Kubernetes API server refused or failed a request (the CA's bundle publisher): its Status reason and code, kept. */
export class KubeApiError extends GatehouseError {
  readonly httpStatus: number
  readonly reason: string
  constructor (httpStatus: number, reason: string, message: string, options?: ErrorOptions) {
    super('GH_K8S_API', 502, message, options)
    this.httpStatus = httpStatus
    this.reason = reason
  }
}

/** No trust bundle is loaded yet. */
export class NoBundleError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_NO_BUNDLE', 503, message, options) }
}

/** No workload certificate is loaded yet. */
export class NoIdentityError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_NO_IDENTITY', 503, message, options) }
}

/** A token was needed and none is configured. */
export class NoTokenError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_NO_TOKEN', 401, message, options) }
}

/** A file would be overwritten. */
export class OutputExistsError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_OUTPUT_EXISTS', 409, message, options) }
}

/** A root-rotation step is not possible in the CA directory's current state. */
export class RotationRefusedError extends GatehouseError {
  constructor (message: string, options?: ErrorOptions) { super('GH_ROTATION_REFUSED', 409, message, options) }
}

export class PeerIdentityError extends GatehouseError {
  readonly reason: string
  constructor (reason: string, message: string) {
    super('GH_PEER_IDENTITY', 502, message)
    this.reason = reason
  }
}

export class CaptureError extends GatehouseError {
  constructor (message: string) { super('GH_CAPTURE_FAILED', 500, message) }
}

export class QuarantineInvalidError extends GatehouseError {
  readonly problems: string[]
  constructor (problems: string[]) {
    super('GH_QUARANTINE_INVALID', 400, `invalid quarantine list:\n  - ${problems.join('\n  - ')}`)
    this.problems = problems
  }
}

export class RoutesInvalidError extends GatehouseError {
  readonly problems: string[]
  constructor (problems: string[]) {
    super('GH_ROUTES_INVALID', 400, `invalid routes:\n  - ${problems.join('\n  - ')}`)
    this.problems = problems
  }
}

/** Something unexpected (a bug): the cause stays in the operational log only, never in an answer. */
export class InternalError extends GatehouseError {
  constructor (options?: { cause?: unknown }) { super('GH_INTERNAL', 500, 'internal error', options) }
}

/** Wraps anything unexpected so callers still get a stable code; the cause stays in the operational log only. */
export function asGatehouseError (err: unknown): GatehouseError {
  if (err instanceof GatehouseError) return err
  return new InternalError({ cause: err })
}
