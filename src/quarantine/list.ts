import { createHash } from 'node:crypto'
import { isMap, isSeq, isScalar, stringify, type Node } from 'yaml'
import { readYamlSource, mapGet, unknownKeys } from '../yaml-source.ts'
import { QuarantineInvalidError } from '../errors.ts'
import { compileCallers, type CallerMatcher } from '../policy/compile.ts'
import { callerPatternProblem } from '../policy/patterns.ts'
import { callerMatches, type Caller } from '../policy/decide.ts'

// The quarantine list (docs/quarantine.md): SPIFFE IDs or patterns (as in a policy's `from`) that
// every sidecar denies before its policy, whose sidecars originate nothing, and to which the CA
// issues nothing. One YAML file is the source (the CA's DIR/quarantine.yaml, a ConfigMap in
// Kubernetes, or a sidecar's --quarantine-file); this module parses, matches and writes it, with no I/O.

export interface QuarantineEntry {
  /** A SPIFFE ID or a pattern (`spiffe://td/ns/shop/**`). */
  id: string
  reason: string
  /** ISO times. */
  added: string
  expires?: string
  /** Who added it: `cli`, or `auto` with the reporters. */
  by: string
}

const ENTRY_KEYS = ['id', 'reason', 'added', 'expires', 'by']
const isTime = (s: unknown): s is string => typeof s === 'string' && !Number.isNaN(Date.parse(s))

export function parseQuarantine (text: string, source = 'quarantine'): QuarantineEntry[] {
  if (text.trim() === '') return []
  const { root, at, problems } = readYamlSource(text, source)
  if (problems.length > 0) throw new QuarantineInvalidError(problems)
  if (!isMap(root)) throw new QuarantineInvalidError([`${at(root)}: expected a mapping with version and entries`])
  problems.push(...unknownKeys(root, ['version', 'entries'], at, ''))
  const version = mapGet(root, 'version')
  if (!isScalar(version) || version.value !== 1) problems.push(`${at(version ?? root)}: version: expected 1`)
  const list = mapGet(root, 'entries')
  const out: QuarantineEntry[] = []
  if (list !== undefined && !isSeq(list)) problems.push(`${at(list)}: entries: expected a list`)
  for (const [i, item] of (isSeq(list) ? list.items : []).entries()) {
    const where = `entries[${i}]`
    if (!isMap(item)) { problems.push(`${at(item as Node)}: ${where}: expected a mapping with id and reason`); continue }
    problems.push(...unknownKeys(item, ENTRY_KEYS, at, where))
    const get = (k: string): unknown => { const n = mapGet(item, k); return isScalar(n) ? n.value : undefined }
    const id = get('id')
    const problem = typeof id === 'string' ? callerPatternProblem(id) : 'expected a SPIFFE ID or pattern'
    if (problem !== undefined) problems.push(`${at(mapGet(item, 'id') ?? item)}: ${where}.id: ${problem}`)
    const reason = get('reason')
    if (typeof reason !== 'string' || reason.trim() === '') problems.push(`${at(item)}: ${where}.reason: expected a reason`)
    const added = get('added') ?? new Date(0).toISOString()
    const expires = get('expires')
    if (!isTime(added)) problems.push(`${at(item)}: ${where}.added: expected an ISO time`)
    if (expires !== undefined && !isTime(expires)) problems.push(`${at(item)}: ${where}.expires: expected an ISO time`)
    if (problem === undefined && typeof reason === 'string' && isTime(added)) {
      out.push({ id: id as string, reason, added, ...(isTime(expires) ? { expires } : {}), by: typeof get('by') === 'string' ? get('by') as string : 'cli' })
    }
  }
  if (problems.length > 0) throw new QuarantineInvalidError(problems)
  return out
}

export function formatQuarantine (entries: readonly QuarantineEntry[]): string {
  return `# Gatehouse quarantine list: written by 'gatehouse ca quarantine'; see docs/quarantine.md\n${stringify({ version: 1, entries })}`
}

/** The entries in force at `now` (expired ones are kept in the file until removed, but match nothing). */
export const inForce = (entries: readonly QuarantineEntry[], now: number): QuarantineEntry[] =>
  entries.filter(e => e.expires === undefined || Date.parse(e.expires) > now)

export const quarantineRevision = (entries: readonly QuarantineEntry[]): string =>
  `sha256:${createHash('sha256').update(JSON.stringify(entries)).digest('hex').slice(0, 16)}`

/** The entries compiled once per list: which entry, if any, holds `caller`. */
export class QuarantineList {
  readonly entries: readonly QuarantineEntry[]
  readonly revision: string
  private readonly matchers: Array<{ entry: QuarantineEntry, match: CallerMatcher, expiresAt: number }>

  constructor (entries: readonly QuarantineEntry[]) {
    this.entries = entries
    this.revision = quarantineRevision(entries)
    this.matchers = entries.map(entry => ({ entry, match: compileCallers([entry.id]), expiresAt: entry.expires === undefined ? Infinity : Date.parse(entry.expires) }))
  }

  static readonly EMPTY = new QuarantineList([])

  /** The entry that quarantines `caller` now, or undefined. */
  holds (caller: Caller, now = Date.now()): QuarantineEntry | undefined {
    for (const m of this.matchers) if (m.expiresAt > now && callerMatches(m.match, caller)) return m.entry
    return undefined
  }

  get size (): number { return this.entries.length }
}
