import type { IncomingMessage } from 'node:http'
import { BodyTooLargeError } from './errors.ts'

/** Reads a request body into memory, refusing (GH_BODY_TOO_LARGE) past `limit` bytes, declared or streamed. */
export async function readBody (req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers['content-length'] ?? 0) > limit) throw new BodyTooLargeError(limit)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > limit) throw new BodyTooLargeError(limit)
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}

/**
 * After a refusal: reads and discards the rest of a request whose body is declared at most `maxBytes`,
 * so the connection can stay alive, and returns true. A larger or chunked body returns false: the
 * caller answers with `connection: close` and Node closes the socket once the answer is out. Either
 * way, a body still arriving after `maxMs` has its connection destroyed, so a denied caller cannot
 * hold the connection by trickling bytes.
 */
export function drainBounded (req: IncomingMessage, maxBytes: number, maxMs: number): boolean {
  req.resume()
  if (req.complete) return true
  const timer = setTimeout(() => { if (!req.complete) req.socket.destroy() }, maxMs)
  timer.unref()
  req.once('end', () => { clearTimeout(timer) })
  req.once('close', () => { clearTimeout(timer) })
  return req.headers['transfer-encoding'] === undefined && Number(req.headers['content-length'] ?? 0) <= maxBytes
}
