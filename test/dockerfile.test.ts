import t from 'tap'
import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

// No Docker engine runs here, so the Dockerfile is checked piece by piece: its structure, every COPY
// source, and the runtime stage's command run from a clean `npm ci --omit=dev` install (the deps
// stage's own RUN line) plus the compiled dist/, as the image's numeric user.

const repo = fileURLToPath(new URL('..', import.meta.url))
const dockerfile = readFileSync(join(repo, 'Dockerfile'), 'utf8')

interface Instruction { op: string, args: string, line: number }
interface Stage { from: string, name: string | undefined, instructions: Instruction[] }

function parseDockerfile (text: string): Stage[] {
  const stages: Stage[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const start = i
    let line = lines[i]!
    if (/^\s*(#|$)/.test(line)) continue
    while (line.endsWith('\\') && i + 1 < lines.length) {
      i++
      const next = lines[i]!
      if (/^\s*#/.test(next)) continue
      line = `${line.slice(0, -1)} ${next.trim()}`
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line)
    if (m === null) throw new Error(`Dockerfile line ${start + 1}: cannot parse ${JSON.stringify(line)}`)
    const op = m[1]!.toUpperCase()
    const args = m[2]!.trim()
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)
      stages.push({ from: f?.[1] ?? args, name: f?.[2], instructions: [] })
    } else {
      const stage = stages.at(-1)
      if (stage === undefined) { if (op === 'ARG') continue; throw new Error(`Dockerfile line ${start + 1}: ${op} before FROM`) }
      stage.instructions.push({ op, args, line: start + 1 })
    }
  }
  return stages
}

/** COPY [--from=X] [--chown=..] src... dest */
function parseCopy (args: string): { from: string | undefined, sources: string[], dest: string } {
  const words = args.startsWith('[') ? JSON.parse(args) as string[] : args.split(/\s+/)
  let from: string | undefined
  const rest: string[] = []
  for (const w of words) {
    if (w.startsWith('--from=')) from = w.slice('--from='.length)
    else if (!w.startsWith('--')) rest.push(w)
  }
  return { from, sources: rest.slice(0, -1), dest: rest.at(-1)! }
}

const stages = parseDockerfile(dockerfile)
const runtime = stages.at(-1)!
const stageByName = (name: string): Stage | undefined => stages.find(s => s.name === name)
const exec = (stage: Stage, op: string): string | undefined => stage.instructions.filter(i => i.op === op).at(-1)?.args

t.test('stages: build on Node 24, a minimal Node 24 runtime as the default (last) target', async t => {
  t.ok(stages.length >= 3, 'multi-stage')
  for (const s of stages.slice(0, -1)) t.match(s.from, /^node:24[.-]/, `${s.name ?? '?'} builds on Node 24 (${s.from})`)
  t.match(runtime.from, /^(gcr\.io\/distroless\/nodejs24-|node:24[.-])/, `runtime on a minimal Node 24 image (${runtime.from})`)
  t.notOk(runtime.instructions.some(i => i.op === 'RUN'), 'the runtime stage runs nothing at build time (distroless: no shell)')
  for (const s of stages) t.match(s.from, /^[a-z0-9./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$/, `${s.name ?? '?'}: base image pinned by digest (${s.from})`)
  t.equal(new Set(stages.slice(0, -1).map(s => s.from)).size, 1, 'the Node build stages use one and the same pinned image')
  const user = exec(runtime, 'USER')
  t.match(user, /^\d+(:\d+)?$/, 'numeric user')
  t.not(Number(user?.split(':')[0]), 0, 'non-root')
  t.equal(user, '1337:1337', 'the UID the manifests and the injector use')
  const entry = JSON.parse(exec(runtime, 'ENTRYPOINT') ?? 'null') as string[]
  t.same(entry, ['/nodejs/bin/node', '/app/dist/cli.js'], 'entrypoint is gatehouse (exec form: signals reach node)')
  t.equal(exec(runtime, 'WORKDIR'), '/app')
  const deps = stageByName('deps')
  t.match(exec(deps!, 'RUN'), /^npm ci --omit=dev\b/, 'production dependencies come from a clean npm ci --omit=dev')
  const capture = stageByName('capture')
  t.match(exec(capture!, 'RUN'), /apt-get install -y --no-install-recommends iptables/, 'the capture target has iptables')
  t.same(JSON.parse(exec(capture!, 'ENTRYPOINT') ?? 'null'), ['node', '/app/dist/cli.js'])
})

t.test('every COPY source exists (in the repository, or in an earlier stage)', async t => {
  const dockerignore = existsSync(join(repo, '.dockerignore')) ? readFileSync(join(repo, '.dockerignore'), 'utf8').split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#')) : []
  const tsBuild = JSON.parse(readFileSync(join(repo, 'tsconfig.build.json'), 'utf8')) as { compilerOptions: { outDir: string } }
  let n = 0
  for (const [i, stage] of stages.entries()) {
    for (const ins of stage.instructions.filter(x => x.op === 'COPY' || x.op === 'ADD')) {
      t.equal(ins.op, 'COPY', `line ${ins.line}: COPY, not ADD`)
      const { from, sources } = parseCopy(ins.args)
      for (const src of sources) {
        n++
        if (from === undefined) {
          t.ok(existsSync(join(repo, src)), `line ${ins.line}: ${src} exists in the repository`)
          t.notOk(dockerignore.some(p => p.replace(/\/$/, '') === src.replace(/^\.\//, '').replace(/\/$/, '')), `line ${ins.line}: ${src} is not in .dockerignore`)
        } else {
          const source = stageByName(from)
          t.ok(source !== undefined && stages.indexOf(source) < i, `line ${ins.line}: stage ${from} is defined earlier`)
          const srcWorkdir = exec(source!, 'WORKDIR') ?? '/'
          t.ok(src.startsWith(`${srcWorkdir}/`), `line ${ins.line}: ${src} is under ${from}'s WORKDIR ${srcWorkdir}`)
          const rel = src.slice(srcWorkdir.length + 1)
          // What that stage produced: what it copied in, node_modules (npm ci) or dist (tsc).
          const copiedIn = source!.instructions.filter(x => x.op === 'COPY').flatMap(x => parseCopy(x.args).sources)
          const produced = rel === 'node_modules' ? source!.instructions.some(x => x.op === 'RUN' && /\bnpm ci\b/.test(x.args))
            : rel === tsBuild.compilerOptions.outDir ? source!.instructions.some(x => x.op === 'RUN' && /\btsc\b.*tsconfig\.build\.json/.test(x.args))
              : copiedIn.includes(rel) || copiedIn.includes(`./${rel}`)
          t.ok(produced, `line ${ins.line}: ${from} produces ${rel}`)
        }
      }
    }
  }
  t.ok(n >= 8, `${n} COPY sources checked`)
  t.ok(dockerignore.includes('node_modules'), '.dockerignore keeps the local node_modules out of the build context')
})

t.test('the runtime command works from a clean npm ci --omit=dev (as the image\'s user)', async t => {
  const started = Date.now()
  const app = mkdtempSync(join(tmpdir(), 'gh-dockerfile-'))
  t.teardown(() => { rmSync(app, { recursive: true, force: true }) })
  chmodSync(app, 0o755)
  for (const f of ['package.json', 'package-lock.json']) copyFileSync(join(repo, f), join(app, f))

  // The deps stage's exact RUN line.
  const depsRun = exec(stageByName('deps')!, 'RUN')!.split(/\s+/)
  t.equal(depsRun[0], 'npm')
  const ci = spawnSync('npm', depsRun.slice(1), { cwd: app, encoding: 'utf8', timeout: 120_000, env: { ...process.env, npm_config_update_notifier: 'false' } })
  t.equal(ci.status, 0, `npm ci --omit=dev: ${ci.status === 0 ? 'ok' : ci.stderr.slice(-2000)}`)
  const ciSeconds = (Date.now() - started) / 1000
  t.comment(`npm ci --omit=dev took ${ciSeconds.toFixed(1)} s`)
  const installed = readdirSync(join(app, 'node_modules'))
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { dependencies: Record<string, string>, devDependencies: Record<string, string> }
  for (const dep of Object.keys(pkg.dependencies)) t.ok(existsSync(join(app, 'node_modules', dep, 'package.json')), `dependency ${dep} installed`)
  for (const dev of Object.keys(pkg.devDependencies)) t.notOk(existsSync(join(app, 'node_modules', dev)), `devDependency ${dev} not installed`)
  t.notOk(installed.includes('node') || existsSync(join(app, 'node_modules', '.bin', 'node')), 'no Node binary from the `node` devDependency')

  // The build stage's compile, into the temporary app folder.
  const tsc = spawnSync(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-p', join(repo, 'tsconfig.build.json'), '--outDir', join(app, 'dist')], { cwd: repo, encoding: 'utf8', timeout: 120_000 })
  t.equal(tsc.status, 0, `tsc: ${tsc.stdout.slice(-2000)}`)
  t.ok(existsSync(join(app, 'dist', 'cli.js')), 'dist/cli.js')

  // The ENTRYPOINT, with the image's paths mapped to the temporary folder and Node 24 for /nodejs/bin/node,
  // run as UID/GID 1337 (no passwd entry needed) with a minimal environment.
  const entry = (JSON.parse(exec(runtime, 'ENTRYPOINT')!) as string[]).map(a => a === '/nodejs/bin/node' ? process.execPath : a.replace(/^\/app\//, `${app}/`))
  const [uid, gid] = exec(runtime, 'USER')!.split(':').map(Number) as [number, number]
  const data = join(app, 'data')
  mkdirSync(data)
  const asRoot = process.getuid?.() === 0
  if (asRoot) chownSync(data, uid, gid)
  const gh = (args: string[]): { status: number | null, stdout: string, stderr: string } => {
    const r = spawnSync(entry[0]!, [...entry.slice(1), ...args], {
      cwd: app, encoding: 'utf8', timeout: 30_000, env: { NODE_ENV: 'production', PATH: '/usr/bin:/bin' }, ...(asRoot ? { uid, gid } : {})
    })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  const help = gh(['--help'])
  t.equal(help.status, 0, `gatehouse --help: ${help.stderr}`)
  for (const cmd of ['ca serve', 'proxy', 'inject serve', 'capture iptables']) t.match(help.stderr + help.stdout, cmd, `lists ${cmd}`)
  const init = gh(['ca', 'init', '--dir', join(data, 'ca'), '--trust-domain', 'cluster.local'])
  t.equal(init.status, 0, `ca init: ${init.stderr}`)
  t.ok(existsSync(join(data, 'ca', 'bundle.pem')), 'bundle.pem written')
  const issue = gh(['ca', 'issue', '--dir', join(data, 'ca'), '--spiffe-id', 'spiffe://cluster.local/ns/gatehouse-system/sa/gatehouse-injector', '--dns', 'gatehouse-injector.gatehouse-system.svc', '--ttl', '2160h', '--out', join(data, 'injector')])
  t.equal(issue.status, 0, `ca issue (the README's injector certificate): ${issue.stderr}`)
  for (const sub of [['proxy', '--help'], ['inject', 'serve', '--help'], ['capture', 'iptables', '--dry-run', '--ipv6', 'off']]) {
    const r = gh(sub)
    t.equal(r.status, 0, `gatehouse ${sub.join(' ')}: ${r.stderr}`)
  }
  t.comment(`whole check took ${((Date.now() - started) / 1000).toFixed(1)} s`)
})
