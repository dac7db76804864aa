import { STATUS_CODES, type OutgoingHttpHeaders } from 'node:http'
import { constants as h2, type ServerHttp2Stream } from 'node:http2'
import type { Duplex } from 'node:stream'
import { errorJson, type Refusal } from '../error-body.ts'

// Every answer the sidecar writes itself (a refusal, an upstream failure) goes through this module,
// for each protocol; the body is src/error-body.ts's, the one shape of every Gatehouse error
// ({"error": "GH_…", "message", "reason"?, "requestId"?}). HTTP/1.1 and HTTP/2 get the status and
// that body; a gRPC caller gets a trailers-only response whose grpc-status a gRPC client reports as
// such (not as an opaque transport error), with the code, the message and the request id in
// grpc-message so the caller can find the decision line.

export type { Refusal } from '../error-body.ts'

/** Where an HTTP/1.1 answer is written: node:http's ServerResponse (outbound) or h1-server-response.ts's H1Response. */
export interface H1Answer {
  writeHead: (status: number, headers: OutgoingHttpHeaders) => unknown
  end: (body: string) => unknown
}

/** HTTP/1.1 on a parsed request. `close` says the connection must not be reused after it. */
export function refuseH1 (res: H1Answer, r: Refusal, close = false): void {
  const body = errorJson(r)
  res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...(close ? { connection: 'close' } : {}) })
  res.end(body)
}

/** HTTP/1.1 on a socket Node has handed over raw (Upgrade, CONNECT, a parse error): the answer, then close. */
export function refuseRaw (socket: Duplex, r: Refusal): void {
  const body = errorJson(r)
  // Destroyed once the answer is written: a caller that never closes its side cannot hold the socket.
  socket.end(`HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`, () => { socket.destroy() })
}

/** gRPC status codes (grpc/doc/statuscodes.md) for the statuses the sidecar answers with. */
export const GRPC_STATUS = { INTERNAL: 13, UNAVAILABLE: 14, DEADLINE_EXCEEDED: 4, PERMISSION_DENIED: 7, UNAUTHENTICATED: 16, UNIMPLEMENTED: 12, INVALID_ARGUMENT: 3, RESOURCE_EXHAUSTED: 8 } as const

/** gRPC's HTTP-to-gRPC mapping (doc/http-grpc-status-mapping.md), except 504, which is a deadline here. */
export function grpcStatusFor (httpStatus: number): number {
  switch (httpStatus) {
    case 400: return GRPC_STATUS.INTERNAL
    case 401: return GRPC_STATUS.UNAUTHENTICATED
    case 403: return GRPC_STATUS.PERMISSION_DENIED
    case 404: case 405: return GRPC_STATUS.UNIMPLEMENTED
    case 431: return GRPC_STATUS.RESOURCE_EXHAUSTED
    case 504: return GRPC_STATUS.DEADLINE_EXCEEDED
    case 429: case 502: case 503: return GRPC_STATUS.UNAVAILABLE
    default: return httpStatus < 400 ? 0 : GRPC_STATUS.INTERNAL
  }
}

/** grpc-message is percent-encoded (PROTOCOL-HTTP2.md): anything outside printable ASCII, and '%'. */
export function grpcMessage (text: string): string {
  return Array.from(Buffer.from(text, 'utf8'), b => b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('')
}

/** The body's fields as one line: "GH_FORBIDDEN: denied by policy (request id 6f1c…)". */
export function grpcText (r: Refusal): string {
  const notes = [...(r.reason === undefined ? [] : [`reason ${r.reason}`]), ...(r.requestId === undefined ? [] : [`request id ${r.requestId}`])]
  return `${r.code}: ${r.message}${notes.length === 0 ? '' : ` (${notes.join(', ')})`}`
}

/** HTTP/2: the status and JSON body, or for gRPC a trailers-only response. A closed stream is left alone. */
export function refuseH2 (stream: ServerHttp2Stream, r: Refusal, grpc: boolean): void {
  if (stream.destroyed || stream.closed) return
  if (stream.headersSent) { stream.close(h2.NGHTTP2_INTERNAL_ERROR); return }
  if (grpc) {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatusFor(r.status)), 'grpc-message': grpcMessage(grpcText(r)) }, { endStream: true })
  } else {
    const body = errorJson(r)
    stream.respond({ ':status': r.status, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    stream.end(body)
  }
}
