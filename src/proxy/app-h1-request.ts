import type { OutgoingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'

// The request head as the app receives it over HTTP/1.1 (app-h1-connection.ts writes it): the
// caller's end-to-end headers, then our own framing. A body is re-framed whatever the method
// (content-length kept, otherwise chunked), so a body can never reach the app unframed and be read
// as a second request; nothing the caller sent about framing or the connection is passed on.

export interface AppRequest {
  method: string
  /** Origin-form target. */
  path: string
  /** End-to-end headers only (hop-by-hop ones are dropped before this). */
  headers: OutgoingHttpHeaders
  body: Readable | null
}

/** A request the app cannot be sent: a value that would split a header line. */
export class RequestHeadError extends Error {
  readonly code = 'INVALID_HEADER_VALUE'
}

// Methods whose empty body is still sent as `content-length: 0` (RFC 9110 8.6, as undici and curl do).
const EXPECTS_BODY = new Set(['POST', 'PUT', 'PATCH', 'QUERY'])
// Never written from the caller's headers: the framing is ours, and Expect was answered by our server.
const FRAMING = new Set(['transfer-encoding', 'connection', 'keep-alive', 'expect'])
const BAD_VALUE = /[\r\n\0]/

export interface RequestHead {
  /** Latin1 text: header values are the bytes the caller sent, as the parser decoded them (one char per byte). */
  head: string
  chunked: boolean
  /** The body's length when framed by content-length. */
  length: number
}

/** The request line and headers as one string; throws RequestHeadError on a value with CR, LF or NUL. */
export function requestHead (r: AppRequest, defaultHost: string): RequestHead {
  let head = `${r.method} ${r.path} HTTP/1.1\r\n`
  let length = -1
  let host = false
  const h = r.headers
  for (const name in h) {
    const value = h[name]
    if (value === undefined || FRAMING.has(name)) continue
    if (name === 'content-length') { length = Number(value); continue }
    if (name === 'host') host = true
    if (Array.isArray(value)) {
      for (const v of value) {
        if (BAD_VALUE.test(v)) throw new RequestHeadError(`the value of ${name} cannot be sent over HTTP/1.1`)
        head += `${name}: ${v}\r\n`
      }
    } else {
      const v = typeof value === 'string' ? value : String(value)
      if (BAD_VALUE.test(v)) throw new RequestHeadError(`the value of ${name} cannot be sent over HTTP/1.1`)
      head += `${name}: ${v}\r\n`
    }
  }
  if (!host) head += `host: ${defaultHost}\r\n`
  let chunked = false
  if (r.body === null) {
    if (length > 0) length = 0 // nothing follows: never promise the app bytes it will not get
    if (length === 0 || EXPECTS_BODY.has(r.method)) head += 'content-length: 0\r\n'
  } else if (length >= 0 && Number.isSafeInteger(length)) head += `content-length: ${length}\r\n`
  else { chunked = true; head += 'transfer-encoding: chunked\r\n' }
  return { head: `${head}connection: keep-alive\r\n\r\n`, chunked, length }
}
