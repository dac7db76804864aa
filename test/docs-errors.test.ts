import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { repoRoot } from './helpers/markdown-run.ts'

// docs/errors.md lists every stable error code, exactly once, with its meaning and what to do; the
// list is checked against the codes the sources actually use (every GH_* string in src/**/*.ts), in
// both directions, so a new code cannot ship undocumented and a removed one cannot linger.

const CODE = /\bGH_[A-Z][A-Z_]*[A-Z]\b/g
/** Written in comments and docs as the generic form ("gatehouse <command>: GH_CODE: message"). */
const PLACEHOLDERS = new Set(['GH_CODE'])

function sourceFiles (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap(e => e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [])
}

function codesInSources (): Map<string, string> {
  const where = new Map<string, string>()
  for (const file of sourceFiles(join(repoRoot, 'src'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(CODE)) if (!where.has(m[0]) && !PLACEHOLDERS.has(m[0])) where.set(m[0], file.slice(repoRoot.length))
  }
  return where
}

const doc = readFileSync(join(repoRoot, 'docs/errors.md'), 'utf8')
const rows = [...doc.matchAll(/^\| `(GH_[A-Z_]+)` \|(.*)\|\s*$/gm)].map(m => ({ code: m[1]!, cells: m[2]!.split(' | ').map(c => c.trim()) }))

t.test('every code used in src/ is documented in docs/errors.md, and every documented code is used', async t => {
  const used = codesInSources()
  t.ok(used.size >= 30, `found ${used.size} codes in src/`)
  const documented = new Set(rows.map(r => r.code))
  for (const [code, file] of used) t.ok(documented.has(code), `${code} (used in ${file}) is documented in docs/errors.md`)
  for (const code of documented) t.ok(used.has(code), `${code} (documented) is still used in src/`)
})

t.test('each code is listed once, with a status, a meaning and what to do', async t => {
  const seen = new Set<string>()
  for (const r of rows) {
    t.notOk(seen.has(r.code), `${r.code} is listed once`)
    seen.add(r.code)
    t.equal(r.cells.length, 3, `${r.code}: status | meaning | what to do`)
    const [status, meaning, todo] = r.cells
    t.match(status, /^(\d{3}|—)$/, `${r.code}: an HTTP status (or — when it never is an HTTP answer)`)
    t.ok((meaning ?? '').length > 20 && (todo ?? '').length > 10, `${r.code}: meaning and what to do are written out`)
  }
})

t.test('the status given is the one the code is raised with', async t => {
  // new GatehouseError('GH_X', 409, …) and super('GH_X', 409, …): the status is the next argument.
  const statuses = new Map<string, Set<number>>()
  for (const file of sourceFiles(join(repoRoot, 'src'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(/\(\s*'(GH_[A-Z_]+)',\s*(\d{3})\b/g)) {
      const s = statuses.get(m[1]!) ?? new Set<number>()
      s.add(Number(m[2]))
      statuses.set(m[1]!, s)
    }
  }
  for (const r of rows) {
    const known = statuses.get(r.code)
    if (known === undefined || r.cells[0] === '—') continue
    t.ok(known.has(Number(r.cells[0])), `${r.code}: documented ${r.cells[0]}, raised with ${[...known].join(', ')}`)
  }
})

t.test('the README and the other docs name only codes that exist', async t => {
  const used = codesInSources()
  for (const file of ['README.md', 'docs/policy.md', 'docs/metrics.md', 'docs/threat-model.md', 'docs/sidecar.md', 'docs/ca.md', 'docs/audit.md', 'docs/development.md']) {
    const text = readFileSync(join(repoRoot, file), 'utf8')
    for (const m of new Set([...text.matchAll(CODE)].map(x => x[0]))) if (!PLACEHOLDERS.has(m)) t.ok(used.has(m), `${file} names ${m}, which src/ uses`)
  }
})
