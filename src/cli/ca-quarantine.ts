import { loadConfig, type Schema } from '../config.ts'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { CaMissingError, ConfigInvalidError } from '../errors.ts'
import { callerPatternProblem } from '../policy/patterns.ts'
import { editQuarantine, readQuarantine, QUARANTINE_FILE } from '../ca/quarantine-book.ts'
import { FILES } from '../ca/ca-directory.ts'
import type { QuarantineEntry } from '../quarantine/list.ts'
import { OUTPUT, formatData, type Runner } from './runner.ts'

// `gatehouse ca quarantine add|remove|list`: edits DIR/quarantine.yaml, which every `ca serve`
// replica watches and publishes, signed, to the sidecars (docs/quarantine.md). In Kubernetes the
// file is a ConfigMap: these commands work on a local copy, and `kubectl apply` carries it.

const DIR = { dir: { kind: 'string', required: true, help: 'the CA directory (its quarantine.yaml is edited)' } } as const satisfies Schema

export const quarantineSchemas = {
  'ca quarantine add': {
    ...DIR,
    'spiffe-id': { kind: 'string', required: true, help: 'a SPIFFE ID, or a pattern as in a policy\'s from (spiffe://td/ns/shop/** quarantines a namespace)' },
    reason: { kind: 'string', required: true, help: 'why: written to the CA\'s log and to every decision line that denies it' },
    ttl: { kind: 'duration', help: 'lift it automatically after this long (e.g. 24h); default: until removed' }
  },
  'ca quarantine remove': {
    ...DIR,
    'spiffe-id': { kind: 'string', required: true, help: 'the entry\'s SPIFFE ID or pattern, exactly as listed' }
  },
  'ca quarantine list': { ...DIR, ...OUTPUT }
} as const satisfies Record<string, Schema>

/** The list lives beside the CA's files: a --dir without them is a typo, not a new list. */
function caDir (dir: string): string {
  if (!existsSync(join(dir, FILES.bundle))) throw new CaMissingError(`${dir} is not a CA directory (no ${FILES.bundle}): check --dir`)
  return dir
}

export const quarantineAdd: Runner = async (argv, io) => {
  const c = loadConfig('ca quarantine add', quarantineSchemas['ca quarantine add'], { argv, maxPositionals: 0 })
  const problem = callerPatternProblem(c.spiffeId)
  if (problem !== undefined) throw new ConfigInvalidError([`--spiffe-id: ${problem}, got ${JSON.stringify(c.spiffeId)}`])
  const now = new Date()
  const entry: QuarantineEntry = { id: c.spiffeId, reason: c.reason, added: now.toISOString(), ...(c.ttl === undefined ? {} : { expires: new Date(now.getTime() + c.ttl).toISOString() }), by: `cli (uid ${process.getuid?.() ?? '?'})` }
  editQuarantine(caDir(c.dir), entries => [...entries.filter(e => e.id !== c.spiffeId), entry])
  io.out(`quarantined ${c.spiffeId}${entry.expires === undefined ? '' : ` until ${entry.expires}`} (${c.dir}/${QUARANTINE_FILE}); every CA replica and sidecar applies it within seconds\n`)
  return 0
}

export const quarantineRemove: Runner = async (argv, io) => {
  const c = loadConfig('ca quarantine remove', quarantineSchemas['ca quarantine remove'], { argv, maxPositionals: 0 })
  let found = false
  editQuarantine(caDir(c.dir), entries => entries.filter(e => { if (e.id !== c.spiffeId) return true; found = true; return false }))
  if (!found) throw new ConfigInvalidError([`--spiffe-id: ${c.spiffeId} is not in ${c.dir}/${QUARANTINE_FILE} ('gatehouse ca quarantine list --dir ${c.dir}' shows the entries)`])
  io.out(`released ${c.spiffeId}\n`)
  return 0
}

export const quarantineList: Runner = async (argv, io) => {
  const c = loadConfig('ca quarantine list', quarantineSchemas['ca quarantine list'], { argv, maxPositionals: 0 })
  const entries = readQuarantine(caDir(c.dir))
  const now = Date.now()
  const rows = entries.map(e => ({ ...e, inForce: e.expires === undefined || Date.parse(e.expires) > now }))
  if (c.output !== 'table') { io.out(formatData(c.output, { entries: rows })); return 0 }
  if (rows.length === 0) { io.out('no one is quarantined\n'); return 0 }
  const table = [['SPIFFE ID', 'REASON', 'ADDED', 'EXPIRES', 'BY'], ...rows.map(r => [r.id, r.reason, r.added, r.expires === undefined ? '-' : `${r.expires}${r.inForce ? '' : ' (expired)'}`, r.by])]
  const widths = table[0]!.map((_, i) => Math.max(...table.map(row => row[i]!.length)))
  io.out(table.map(row => row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i]!)).join('  ')).join('\n') + '\n')
  return 0
}
