// One request through a target before it is measured: it must answer 200 with the app's body, so a
// misconfigured target fails loudly instead of being benchmarked at the speed of its error page.
import { readFileSync } from 'node:fs'
import { Pool } from 'undici'
import type { BenchEnv, Target } from '../targets/target.ts'

export async function probe (env: BenchEnv, t: Target, bodyBytes: number): Promise<void> {
  const connect = t.tls
    ? { ca: readFileSync(env.pki.bundle, 'utf8'), cert: readFileSync(env.pki.client.cert, 'utf8'), key: readFileSync(env.pki.client.key, 'utf8'), minVersion: 'TLSv1.3' as const, checkServerIdentity: () => undefined }
    : undefined
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
