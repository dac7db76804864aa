import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type Tap } from './mesh.ts'
import { tempDir } from './files.ts'

// Runs the commands a Markdown document shows, so the document cannot rot.
//   ```sh / ```bash   each command runs and must exit 0; one ending in "&" is a server: it runs in
//                     the background and must print "listening" (every Gatehouse server logs it)
//   ```console        "$ command" lines run; the lines after one are its expected output, where "…"
//                     stands for anything, a run of digits for any number, and a run of spaces for
//                     any spaces (table columns)
//   ```yaml file=F    written to F in the working directory, in document order; "policy" in the info
//                     string also runs `gatehouse policy check F`, which must say OK ("invalid" marks
//                     a policy shown to fail, whose check a console block shows)
// Commands run in order in one bash per session (state such as `cd` carries over), in a fresh temp
// directory, with the README's `alias gatehouse=...` defined first. Port numbers named in `ports`
// are replaced by free random ports, so nothing here binds a fixed port.

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url))

export interface FencedBlock {
  lang: string
  /** The rest of the info string, split on spaces ("file=x.yaml", "policy"). */
  info: string[]
  text: string
  /** 1-based line of the opening fence. */
  line: number
  /** The nearest "#" or "##" heading above the block. */
  section: string
}

export function fencedBlocks (markdown: string): FencedBlock[] {
  const lines = markdown.split('\n')
  const blocks: FencedBlock[] = []
  let section = ''
  for (let i = 0; i < lines.length; i++) {
    const heading = /^#{1,2} (.+)$/.exec(lines[i]!)
    if (heading !== null) { section = heading[1]!.trim(); continue }
    const open = /^(\s*)(`{3,})\s*([\w-]*)\s*(.*)$/.exec(lines[i]!)
    if (open === null) continue
    const [, indent, fence, lang, rest] = open as unknown as [string, string, string, string, string]
    const body: string[] = []
    let j = i + 1
    for (; j < lines.length; j++) {
      if (lines[j]!.trim() === fence) break
      body.push(lines[j]!.startsWith(indent) ? lines[j]!.slice(indent.length) : lines[j]!)
    }
    blocks.push({ lang, info: rest.split(/\s+/).filter(s => s !== ''), text: body.join('\n'), line: i + 1, section })
    i = j
  }
  return blocks
}

/** The info-string value of `key=` (e.g. file=policy.yaml). */
export const infoValue = (b: FencedBlock, key: string): string | undefined => b.info.find(s => s.startsWith(`${key}=`))?.slice(key.length + 1)

/** Drops a trailing "# comment" outside quotes. */
export function stripComment (line: string): string {
  let quote: string | undefined
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!
    if (quote !== undefined) { if (c === quote) quote = undefined; else if (c === '\\' && quote === '"') i++; continue }
    if (c === '\'' || c === '"') quote = c
    else if (c === '\\') i++
    else if (c === '#' && (i === 0 || /\s/.test(line[i - 1]!))) return line.slice(0, i).trimEnd()
  }
  return line.trimEnd()
}

/** Shell commands of a sh block: continuation lines joined, heredoc bodies kept with their command. */
export function shellCommands (text: string): string[] {
  const lines = text.split('\n')
  const out: string[] = []
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() === '' || lines[i]!.trim().startsWith('#')) continue
    let cmd = lines[i]!
    while (cmd.endsWith('\\') && i + 1 < lines.length) cmd += `\n${lines[++i]!}`
    const heredoc = /<<-?\s*(['"]?)(\w+)\1/.exec(cmd)
    if (heredoc !== null) {
      while (i + 1 < lines.length) {
        cmd += `\n${lines[++i]!}`
        if (lines[i]!.trim() === heredoc[2]) break
      }
    }
    out.push(cmd)
  }
  return out
}

/** One line, for messages and skip rules: continuations joined, comment dropped (heredoc: its first line). */
export const commandLine = (cmd: string): string => stripComment(cmd.replace(/\\\n\s*/g, ' ').split('\n')[0]!).trim()

/** "$ cmd" lines and the expected output after each. */
export function consoleCommands (text: string): Array<{ command: string, expected: string }> {
  const out: Array<{ command: string, expected: string[] }> = []
  for (const line of text.split('\n')) {
    if (line.startsWith('$ ')) out.push({ command: line.slice(2), expected: [] })
    else if (out.length > 0) out.at(-1)!.expected.push(line)
  }
  return out.map(c => ({ command: c.command, expected: c.expected.join('\n').replace(/\s+$/, '') }))
}

/** The expected output as a regular expression: "…" is anything, digits any number, spaces any spaces. */
export function outputPattern (expected: string): RegExp {
  const line = (l: string): string => l.split('…').map(part => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/\d+/g, '\\d+').replace(/ {2,}/g, ' +')).join('.*')
  return new RegExp(`^${expected.split('\n').map(line).join('\\n')}$`)
}

export const normalizeOutput = (s: string): string => s.split('\n').map(l => l.trimEnd()).join('\n').replace(/^\n+|\n+$/g, '')

export type StepKind = 'run' | 'server' | 'console' | 'file' | 'policy-check' | 'skip'

export interface Step {
  kind: StepKind
  /** What the document shows (one line), for messages. */
  shown: string
  /** Bash source to run. */
  script: string
  block: FencedBlock
  expected?: string
  skipReason?: string
}

export interface StepResult { step: Step, status: number | undefined, output: string, ms: number | undefined }

export interface SessionOptions {
  /** Commands matched here are not run; each with the reason. */
  skip: Array<[RegExp, string]>
  /** Port numbers in the document, replaced by free random ports (and given as env, see portEnv). */
  ports?: number[]
  /** GATEHOUSE_* variables set to 127.0.0.1:<port> for defaults the commands do not spell out. */
  portEnv?: Record<string, number>
  env?: Record<string, string>
  /** Repository paths linked into the working directory (read-only use, e.g. deploy). */
  links?: string[]
  /** Shell lines run from the repository root before anything else (the README's alias). */
  prelude?: string[]
  /** Commands written for the repository root, run there (default: npm scripts). */
  inRepo?: RegExp
  timeoutMs?: number
}

/** Turns blocks into steps (no side effects): what the tests assert on and what runSession runs. */
export function stepsOf (blocks: FencedBlock[], skip: SessionOptions['skip']): Step[] {
  const steps: Step[] = []
  for (const block of blocks) {
    if (block.lang === 'sh' || block.lang === 'bash') {
      for (const cmd of shellCommands(block.text)) {
        const shown = commandLine(cmd)
        const skipped = skip.find(([re]) => re.test(shown))
        if (skipped !== undefined) { steps.push({ kind: 'skip', shown, script: '', block, skipReason: skipped[1] }); continue }
        if (/[^&]&$/.test(shown)) steps.push({ kind: 'server', shown, script: shown.slice(0, -1).trimEnd(), block })
        else steps.push({ kind: 'run', shown, script: cmd, block })
      }
    } else if (block.lang === 'console') {
      for (const c of consoleCommands(block.text)) {
        const skipped = skip.find(([re]) => re.test(c.command))
        if (skipped !== undefined) steps.push({ kind: 'skip', shown: c.command, script: '', block, skipReason: skipped[1] })
        else steps.push({ kind: 'console', shown: c.command, script: c.command, block, expected: c.expected })
      }
    } else if (infoValue(block, 'file') !== undefined) {
      const file = infoValue(block, 'file')!
      steps.push({ kind: 'file', shown: `(${block.lang} block written to ${file})`, script: `cat > '${file}' <<'GH_MD_EOF'\n${block.text}\nGH_MD_EOF`, block })
      if (block.info.includes('policy')) steps.push({ kind: 'policy-check', shown: `gatehouse policy check ${file}`, script: `gatehouse policy check '${file}'`, block, expected: 'OK …' })
    }
  }
  // A policy the document itself checks (and shows the output of) needs no second check.
  return steps.filter(s => s.kind !== 'policy-check' || !steps.some(o => o.kind === 'console' && o.shown === s.shown))
}

/** Ports handed out in this process: sessions run side by side and must never share one. */
const handedOut = new Set<number>()

/**
 * A free port for a session, below the kernel's ephemeral range (32768-60999 on Linux): a port
 * taken from that range by "listen on 0, then close" can become the source port of any outgoing
 * connection on the machine (other tests run in parallel) before the session's server binds it.
 */
async function freePort (): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    if (handedOut.has(port)) continue
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer()
      s.once('error', () => { resolve(false) })
      s.listen(port, '127.0.0.1', () => { s.close(() => { resolve(true) }) })
    })
    if (!free) continue
    handedOut.add(port)
    return port
  }
}

const MARK = '@@gh-md-step'

/**
 * Runs the steps in one bash, in a new temp directory. Servers started with "&" are stopped (SIGTERM)
 * when the session ends; if bash itself had to be killed, they are killed by PID, after checking the
 * process still runs in this session's directory.
 */
export async function runSession (t: Tap, steps: Step[], o: SessionOptions): Promise<{ results: StepResult[], dir: string, stderr: string, serverLogs: Map<Step, string> }> {
  const dir = tempDir(t, 'gh-md-')
  const work = join(dir, 'work')
  const meta = join(dir, 'meta')
  for (const d of [work, meta]) mkdirSync(d)
  for (const l of o.links ?? []) symlinkSync(join(repoRoot, l), join(work, l))
  const portMap = new Map<number, number>()
  for (const p of o.ports ?? []) portMap.set(p, await freePort())
  const subst = (s: string): string => s.replace(/\b(\d{4,5})\b/g, (m, n: string) => String(portMap.get(Number(n)) ?? m))
  const env: Record<string, string> = { ...o.env }
  for (const [name, p] of Object.entries(o.portEnv ?? {})) env[name] = `127.0.0.1:${portMap.get(p) ?? p}`

  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`
  const lines = [
    'set -o pipefail',
    'shopt -s expand_aliases',
    `REPO=${q(repoRoot)}; WORK=${q(work)}; PIDS=${q(join(meta, 'pids'))}`,
    'trap \'exit 143\' TERM',
    'trap \'for p in $(cat "$PIDS" 2>/dev/null); do kill "$p" 2>/dev/null; done; wait\' EXIT',
    'cd "$REPO"',
    ...(o.prelude ?? []),
    'cd "$WORK"'
  ]
  const runnable = steps.map((s, i) => ({ s, i })).filter(x => x.s.kind !== 'skip')
  for (const { s, i } of runnable) {
    const script = subst(s.script)
    lines.push(`printf '\\n${MARK} ${i} begin\\n'; t0=$(date +%s%N)`)
    if (s.kind === 'server') {
      const log = join(meta, `server-${i}.log`)
      lines.push(
        `${script} > ${q(log)} 2>&1 &`,
        'pid=$!; echo "$pid" >> "$PIDS"; st=1',
        `for _ in $(seq 1 400); do if grep -q listening ${q(log)}; then st=0; break; fi; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done`
      )
    } else {
      // Commands written for the repository root (npm scripts) run there.
      const inRepo = (o.inRepo ?? /^npm /).test(s.shown)
      lines.push(`${inRepo ? 'pushd "$REPO" >/dev/null; ' : ''}{ ${script}\n} 2>&1 </dev/null; st=$?${inRepo ? '; popd >/dev/null' : ''}`)
    }
    lines.push(`printf '\\n${MARK} ${i} end %d %d\\n' "$st" $((($(date +%s%N) - t0) / 1000000))`)
    if (s.kind === 'run' || s.kind === 'server' || s.kind === 'file') lines.push('[ "$st" -eq 0 ] || exit 3')
  }
  const scriptFile = join(meta, 'session.sh')
  writeFileSync(scriptFile, `${lines.join('\n')}\n`)

  const run = await new Promise<{ stdout: string, stderr: string, killed: boolean }>((resolve) => {
    const child = spawn('bash', [scriptFile], { cwd: work, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c })
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c })
    let killed = false
    const timer = setTimeout(() => { killed = true; child.kill('SIGTERM'); setTimeout(() => child.kill('SIGKILL'), 5000).unref() }, o.timeoutMs ?? 90_000)
    child.on('close', () => { clearTimeout(timer); resolve({ stdout, stderr, killed }) })
  })
  if (run.killed) killStragglers(join(meta, 'pids'), work)

  const results: StepResult[] = []
  const re = new RegExp(`\\n${MARK} (\\d+) begin\\n([\\s\\S]*?)\\n${MARK} \\1 end (\\d+) (\\d+)\\n`, 'g')
  const byIndex = new Map<number, { output: string, status: number, ms: number }>()
  for (const m of `\n${run.stdout}`.matchAll(re)) byIndex.set(Number(m[1]), { output: m[2]!, status: Number(m[3]), ms: Number(m[4]) })
  const serverLogs = new Map<Step, string>()
  for (const { s, i } of runnable) {
    const r = byIndex.get(i)
    if (s.kind === 'server') {
      const log = join(meta, `server-${i}.log`)
      serverLogs.set(s, existsSync(log) ? readFileSync(log, 'utf8') : '')
    }
    results.push({ step: s, status: r?.status, output: r === undefined ? '' : r.output, ms: r?.ms })
  }
  return { results, dir: work, stderr: run.stderr, serverLogs }
}

/** Only after a timeout: SIGKILL what the session started and left running, if it is still ours. */
function killStragglers (pidsFile: string, work: string): void {
  if (!existsSync(pidsFile)) return
  for (const pid of readFileSync(pidsFile, 'utf8').split('\n').filter(Boolean).map(Number)) {
    try {
      if (readlinkSync(`/proc/${pid}/cwd`) !== work) continue
      process.kill(pid, 'SIGKILL')
    } catch { /* already gone */ }
  }
}

/** Asserts every step's outcome: exit 0 for commands and servers, matching output for console lines. */
export function checkResults (t: { equal: (...a: any[]) => unknown, match: (...a: any[]) => unknown, fail: (m: string) => unknown, pass: (m: string) => unknown }, source: string, session: { results: StepResult[], stderr: string, serverLogs: Map<Step, string> }): void {
  let first = true
  for (const r of session.results) {
    const where = `${source}:${r.step.block.line} ${r.step.shown}`
    if (r.status === undefined) {
      // The first step not reached is the one that failed or ran out of time: show what the servers said.
      const servers = first ? [...session.serverLogs.values()].map(l => l.slice(-1500)).join('\n---\n') : ''
      first = false
      t.fail(`${where}: not reached (an earlier command failed or the session ran out of time)${session.stderr === '' ? '' : `\n${session.stderr.slice(-2000)}`}${servers === '' ? '' : `\nserver logs:\n${servers}`}`)
      continue
    }
    if (r.step.kind === 'console' || r.step.kind === 'policy-check') {
      const got = normalizeOutput(r.output)
      t.match(got, outputPattern(r.step.expected ?? ''), `${where}: output as shown`)
      if (r.step.kind === 'policy-check') t.equal(r.status, 0, `${where}: exit 0`)
      continue
    }
    const log = r.step.kind === 'server' ? session.serverLogs.get(r.step) : undefined
    t.equal(r.status, 0, `${where}: ${r.step.kind === 'server' ? 'started and is listening' : 'exit 0'}${r.status === 0 ? '' : `\n${(log ?? r.output).slice(-3000)}`}`)
  }
}

/** The README's `alias gatehouse=...` line: how the documents' `gatehouse` commands are run. */
export function readmeAlias (): string {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
  const line = fencedBlocks(readme).filter(b => b.lang === 'sh').flatMap(b => shellCommands(b.text)).find(c => c.startsWith('alias gatehouse='))
  if (line === undefined) throw new Error('README.md shows no `alias gatehouse=...` line')
  return line
}

/** Markdown files of the newcomer's docs (docs/cli.md is generated and holds no examples). */
export const DOC_FILES = ['README.md', 'docs/policy.md', 'docs/errors.md', 'docs/metrics.md', 'docs/threat-model.md', 'docs/sidecar.md', 'docs/ca.md', 'docs/audit.md', 'docs/development.md']
