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
