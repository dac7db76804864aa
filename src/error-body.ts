import type { ServerResponse } from 'node:http'
import { asGatehouseError, type GatehouseError } from './errors.ts'

// The one JSON body of every error and refusal Gatehouse answers over HTTP (docs/errors.md): the
// sidecar's inbound and outbound refusals (HTTP/1.1 and HTTP/2; a gRPC caller gets the same fields
// as grpc-status and grpc-message, src/proxy/refusal.ts), its admin listener, the CA's API, the
// injector's webhook and the plain-HTTP metrics listener. It is the shape the CA's API has always
// answered with, so a sidecar of an older version still reads a newer CA's refusals (and the
// reverse); `readErrorBody()` is the reading side, for the CA client and the quarantine reporter.
//
//   {"error": "GH_FORBIDDEN", "message": "denied by policy", "requestId": "6f1c…"}
//   {"error": "GH_TOKEN_REPLAYED", "message": "join token has already been used"}
//
// `error` is the stable GH_* code of a class in src/errors.ts (what scripts and clients match on);
// `message` is for a person and may change; `reason`, where the code has sub-cases, is a stable
// category (an SVID check such as `expired`, what a bad request got wrong, `quarantined`);
// `requestId` names the sidecar's decision line for the request, when there is one.

export interface ErrorBody {
  /** The stable GH_* code. */
  error: string
  message: string
  reason?: string
  requestId?: string
}

/**
 * A refusal as a value: a GatehouseError's code, status and message, and what this one request adds.
 * The sidecar refuses without throwing (a flood of denied requests constructs no Error), from
 * instances made once (see refusal()).
 */
export interface Refusal {
  status: number
  code: string
  message: string
  reason?: string
  requestId?: string
}

/**
 * The refusal for one request from an error class's instance: its code and status always; its
 * message unless this request's own is given (say, which target was refused).
 */
export function refusal (err: GatehouseError, extra: { message?: string | undefined, reason?: string | undefined, requestId?: string | undefined } = {}): Refusal {
  const reason = extra.reason ?? reasonOf(err)
  return {
    status: err.status,
    code: err.code,
    message: extra.message ?? err.message,
    ...(reason === undefined ? {} : { reason }),
    ...(extra.requestId === undefined ? {} : { requestId: extra.requestId })
  }
}

/** Some errors carry a category (SvidInvalidError, PeerIdentityError): it goes into the body as `reason`. */
function reasonOf (err: object): string | undefined {
  const r = (err as { reason?: unknown }).reason
  return typeof r === 'string' ? r : undefined
}

/** A refusal as it is, any error as its refusal: anything unexpected is GH_INTERNAL, its cause never shown. */
export function asRefusal (e: unknown): Refusal {
  return isRefusal(e) ? e : refusal(asGatehouseError(e))
}

/** The body of a refusal or an error (a GatehouseError, or anything else as GH_INTERNAL). */
export function errorBody (e: unknown): ErrorBody {
  const r = asRefusal(e)
  return {
    error: r.code,
    message: r.message,
    ...(r.reason === undefined ? {} : { reason: r.reason }),
    ...(r.requestId === undefined ? {} : { requestId: r.requestId })
  }
}

function isRefusal (e: unknown): e is Refusal {
  return typeof e === 'object' && e !== null && !(e instanceof Error) && typeof (e as Refusal).code === 'string' && typeof (e as Refusal).status === 'number'
}

export function errorJson (e: unknown): string {
  return JSON.stringify(errorBody(e))
}

/** Answers a request with a refusal or an error: its status and the JSON body, not to be cached. */
export function sendError (res: ServerResponse, err: unknown, headers: Record<string, string> = {}): void {
  const r = asRefusal(err)
  const body = errorJson(r)
  res.writeHead(r.status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': String(Buffer.byteLength(body)), ...headers })
  res.end(body)
}

/**
 * Reads an error body (the CA's answers, for the CA client and the quarantine reporter): undefined
 * when the text is not one, e.g. a proxy's HTML page in front of the CA.
 */
export function readErrorBody (text: string): ErrorBody | undefined {
  let v: unknown
  try { v = JSON.parse(text) } catch { return undefined }
  if (typeof v !== 'object' || v === null) return undefined
  const { error, message, reason, requestId } = v as Record<string, unknown>
  if (typeof error !== 'string' || !error.startsWith('GH_')) return undefined
  return {
    error,
    message: typeof message === 'string' ? message : '',
    ...(typeof reason === 'string' ? { reason } : {}),
    ...(typeof requestId === 'string' ? { requestId } : {})
  }
}
