import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { Agent, request } from 'undici'
import { Pki, startApp } from './helpers/mesh.ts'
import { startProcess } from './helpers/process.ts'
import { cliPath } from './helpers/run-cli.ts'
import { sleep } from './helpers/raw-tls.ts'
import { sidecarProcessEnv } from '../src/inject/node-options.ts'
import { limitsForMemory } from '../src/proxy/connection-budget.ts'
import { waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// Issue 13.4: about 9,900 connections that never finish a handshake took a sidecar with the
// injector's settings past its 256Mi limit (OOM-kill: a denial of service). Here the real
// `gatehouse proxy` process runs as the injector starts it (NODE_OPTIONS, MALLOC_ARENA_MAX,
// --memory-limit 256Mi, every other limit at its default), takes a flood of idle, half-open and
// certificate-less connections, and must stay under the limit while a good caller is served.

const LIMIT = 256 * 2 ** 20
const PER_KIND = 3300
const CLIENT = 'spiffe://example.org/ns/client/sa/caller'

const rssBytes = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024

t.test(`a flood of ${PER_KIND * 3} idle, half-open and certificate-less connections stays under a 256Mi limit, and a good caller is served`, async t => {
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const app = await startApp(t)
  const server = pki.issue('/ns/server/sa/payments', 'server')
  const client = pki.issue('/ns/client/sa/caller', 'client')
  const policyFile = join(dir, 'policy.yaml')
  writeFileSync(policyFile, `version: 1\nrules:\n  - name: all\n    from: ["${CLIENT}"]\n`)
  const proxy = await startProcess(t, process.execPath, [cliPath, 'proxy',
    '--inbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--outbound', '127.0.0.1:0',
    '--upstream', `127.0.0.1:${app.port}`, '--policy', policyFile, '--trust-bundle', pki.bundleFile,
    '--cert', server.cert, '--key', server.key, '--decision-log-stdout', 'false', '--memory-limit', '256Mi'
  ], /"event":"inbound\.listening"[^\n]*"port":(\d+)/, { env: { ...sidecarProcessEnv('256Mi') }, ms: 30_000 })
  const port = Number(proxy.match[1])
  const pid = proxy.proc.pid!
  let peak = rssBytes(pid)
  const baseline = peak
  const sampler = setInterval(() => { try { peak = Math.max(peak, rssBytes(pid)) } catch { /* exited */ } }, 50)
  t.teardown(() => { clearInterval(sampler) })

  const agent = new Agent({ connect: { ca: pki.ca.bundlePem, cert: client.chainPem, key: client.keyPem, checkServerIdentity: () => undefined }, connections: 1 })
  t.teardown(async () => { await agent.destroy() })
  const good = async (): Promise<number> => {
    const res = await request(`https://127.0.0.1:${port}/ok`, { dispatcher: agent, headersTimeout: 10_000 })
    await res.body.dump()
    return res.statusCode
  }
  t.equal(await good(), 200, 'the good caller is served before the flood')

  const held: Socket[] = []
  t.teardown(() => { for (const s of held) s.destroy() })
  const open = async (kind: 'idle' | 'half-open'): Promise<void> => {
    await new Promise<void>(resolve => {
      const s = netConnect(port, '127.0.0.1', () => {
        // A TLS record header announcing a 16 KB ClientHello, and only the first bytes of it.
        if (kind === 'half-open') s.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x3f, 0xf0, 0x01, 0x00, 0x3f, 0xec, 0x03, 0x03]), Buffer.alloc(200, 7)]))
        resolve()
      })
      s.on('error', () => { resolve() })
      held.push(s)
    })
  }
  const certless = async (): Promise<void> => {
    await new Promise<void>(resolve => {
      const s = tlsConnect({ port, host: '127.0.0.1', ca: pki.ca.bundlePem, checkServerIdentity: () => undefined }, () => { resolve() })
      s.on('error', () => { resolve() })
      s.on('close', () => { resolve() })
      held.push(s)
    })
  }
  const inBatches = async (n: number, one: () => Promise<void>, batch: number): Promise<void> => {
    for (let i = 0; i < n; i += batch) await Promise.all(Array.from({ length: Math.min(batch, n - i) }, one))
  }
  const started = Date.now()
  await inBatches(PER_KIND, async () => { await open('idle') }, 500)
  await inBatches(PER_KIND, async () => { await open('half-open') }, 500)
  const flood = inBatches(PER_KIND, certless, 50)
  // The good caller, while the flood is held open and the certificate-less handshakes go on.
  const during = await Promise.all(Array.from({ length: 5 }, async (_, i) => { await sleep(i * 200); return await good() })) // the good calls spaced 200 ms apart across the flood
  await flood
  await sleep(500) // RSS sampling goes on for a moment after the flood
  clearInterval(sampler)
  const limits = limitsForMemory('256Mi')
  t.comment(`RSS: ${(baseline / 2 ** 20).toFixed(1)} MiB before, peak ${(peak / 2 ** 20).toFixed(1)} MiB during ${PER_KIND * 3} flood connections in ${Date.now() - started} ms (limits: ${limits.maxConnections} connections, ${limits.maxPendingHandshakes} pending handshakes, ${limits.handshakeTimeoutMs} ms handshake timeout)`)
  t.same(during, [200, 200, 200, 200, 200], 'the good caller is served during the flood')
  t.ok(peak < LIMIT, `peak RSS ${(peak / 2 ** 20).toFixed(1)} MiB stays under the 256Mi limit`)
  t.equal(proxy.proc.exitCode, null, 'the proxy is still running')

  const metricsPort = Number(/"event":"admin\.listening"[^\n]*"port":(\d+)/.exec(proxy.output())?.[1] ?? 0)
  if (metricsPort !== 0) {
    const text = await (await request(`http://127.0.0.1:${metricsPort}/metrics`)).body.text()
    const evicted = Number(/gatehouse_tls_handshake_failures_total\{reason="max-pending-handshakes"\} (\d+)/.exec(text)?.[1] ?? 0)
    t.ok(evicted > 0, `unfinished handshakes past the cap were cut (${evicted})`)
  }
  for (const s of held) s.destroy()
  await waitFor(async () => await good() === 200, 10_000, 'the good caller after the flood')
  t.pass('the good caller is served after the flood')
})
