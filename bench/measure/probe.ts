// One request through a target before it is measured: it must answer 200 with the app's body (a gRPC
// target: HTTP 200, grpc-status 0 and the echoed message), so a misconfigured target fails loudly
// instead of being benchmarked at the speed of its error page.
import { readFileSync } from 'node:fs'
import { createSecureContext } from 'node:tls'
import { Pool } from 'undici'
import type { BenchEnv, Target } from '../targets/target.ts'
import { openH2, grpcCall, GRPC_BODY } from '../lib/grpc.ts'

export async function probe (env: BenchEnv, t: Target, bodyBytes: number): Promise<void> {
  const connect = t.tls
    ? { ca: readFileSync(env.pki.bundle, 'utf8'), cert: readFileSync(env.pki.client.cert, 'utf8'), key: readFileSync(env.pki.client.key, 'utf8'), minVersion: 'TLSv1.3' as const, checkServerIdentity: () => undefined }
    : undefined
  if (t.grpc !== undefined) { await probeGrpc(t, t.grpc, connect); return }
  const pool = new Pool(t.origin, { connections: 1, ...(connect === undefined ? {} : { connect }) })
  try {
    const res = await pool.request({ path: t.path, method: 'GET', ...(t.headers === undefined ? {} : { headers: t.headers }) })
    const body = await res.body.arrayBuffer()
    if (res.statusCode !== 200 || body.byteLength !== bodyBytes) {
      throw new Error(`${t.name}: probe answered ${res.statusCode} with ${body.byteLength} bytes (expected 200 with ${bodyBytes}): ${Buffer.from(body).toString('utf8').slice(0, 200)}`)
    }
  } finally {
    await pool.destroy()
  }
}

async function probeGrpc (t: Target, g: NonNullable<Target['grpc']>, connect: { ca: string, cert: string, key: string } | undefined): Promise<void> {
  const session = await openH2({ origin: t.origin, authority: g.authority, ...(g.tunnel === undefined ? {} : { tunnel: g.tunnel }) }, connect === undefined ? undefined : createSecureContext({ ...connect, minVersion: 'TLSv1.3' }))
  try {
    let body: Buffer = Buffer.alloc(0)
    const failure = await grpcCall([session], g.authority, t.origin.startsWith('https:') ? 'https' : 'http', (b) => { body = b })()
    if (failure !== null || !body.equals(GRPC_BODY)) throw new Error(`${t.name}: gRPC probe ${failure ?? 'succeeded'} with a ${body.length}-byte body (expected ${GRPC_BODY.length} bytes, the request echoed): ${body.toString('hex').slice(0, 120)}`)
  } finally {
    session.destroy()
  }
}
