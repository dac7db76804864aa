import t from 'tap'
import { join } from 'node:path'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { Pki, policyAllowing } from './helpers/mesh.ts'
import { cliPath } from './helpers/run-cli.ts'
import { startProcess } from './helpers/process.ts'
import { tempDir } from './helpers/files.ts'

// An idle sidecar (no traffic at all) sleeps: every pod pays for its timers. prom-client's event-loop
// monitor at its default 10 ms woke the main thread 100 times a second (1.1 % of a core, idle);
// src/process-metrics.ts samples every 100 ms. Counted from the kernel's voluntary context switches
// of the process's main thread, which only a wakeup after a sleep increments (issue 21).

const mainThreadWakeups = (pid: number): number => Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8'))![1])

t.test('an idle gatehouse proxy wakes its main thread fewer than 50 times a second (a 10 ms timer alone is 100)', { skip: existsSync('/proc/self/task') ? false : 'needs Linux /proc' }, async t => {
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const server = pki.issue('/ns/server/sa/payments', 'server')
  const policyFile = join(dir, 'policy.yaml')
  writeFileSync(policyFile, policyAllowing('spiffe://example.org/ns/client/sa/caller'))
  const proxy = await startProcess(t, process.execPath, [cliPath, 'proxy',
    '--inbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--upstream', '127.0.0.1:9',
    '--policy', policyFile, '--trust-bundle', pki.bundleFile, '--cert', server.cert, '--key', server.key,
    '--decision-log', join(dir, 'decisions.log'), '--decision-log-stdout', 'false'], /"outbound\.listening"/, { ms: 20_000 })
  const pid = proxy.proc.pid!
  t.ok(readdirSync(`/proc/${pid}/task`).length > 1, 'the proxy runs (its threads are listed)')
  // Start-up work (module compilation, the first policy and file polls) is over by then, even on a busy machine.
  await new Promise(resolve => setTimeout(resolve, 2500))
  const before = mainThreadWakeups(pid)
  const t0 = performance.now()
  await new Promise(resolve => setTimeout(resolve, 3000))
  const perSecond = (mainThreadWakeups(pid) - before) / ((performance.now() - t0) / 1000)
  t.ok(perSecond < 50, `main-thread wakeups per second while idle: ${perSecond.toFixed(1)} (15-30 here: the 100 ms monitor, the 1-5 s sweeps and file polls; over 100 with a 10 ms timer)`)
})
