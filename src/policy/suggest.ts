import { callerPatternProblem } from './patterns.ts'

// `gatehouse policy suggest`: the least-privilege policy for one callee, from the traffic its decision
// log recorded. Each served request (allowed, or denied in audit mode and served anyway) is folded,
// as it streams by, into one entry per (caller, method, generalized path) or (caller, TCP port), so
// memory grows with the number of distinct routes, never with the number of lines. Variable path
// segments (numbers, UUIDs, hex ids, dates, long random tokens) become "*", one segment each; a
// gRPC method path (/pkg.Service/Method) is kept exact. Rules are then made per caller and per set of
// methods, so a rule never allows a method on a path where it was not seen (beyond the "*").

export interface SuggestOptions {
  callee: string
  since?: Date
  /** Routes seen fewer times than this are left out (they would be denied). */
  minCalls?: number
  /** Also collapse two or more paths under the same two leading segments into "/a/b/**". */
  widen?: boolean
}

interface Seen { count: number, first: string, last: string }

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const HEX_ID = /^[0-9a-f]{8,}$/i
const DATE = /^\d{4}-\d{2}(-\d{2})?$/
const TOKEN = /^[A-Za-z0-9_-]{20,}$/
/** /package.Service/Method: gRPC's path, one method exactly. */
const GRPC = /^\/[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+\/[A-Za-z_]\w*$/
/** Distinct values at one position (the rest of the path the same) from which that segment counts as variable. */
const SIBLINGS = 5

/** A segment that names one object rather than a route: a number, UUID, hex id, date or long random token. */
export function isVariableSegment (s: string): boolean {
  if (/^\d+$/.test(s) || UUID.test(s) || DATE.test(s)) return true
  if (HEX_ID.test(s) && /\d/.test(s)) return true
  return TOKEN.test(s) && /\d/.test(s) && /[A-Za-z]/.test(s)
}

export const isGrpcPath = (path: string): boolean => GRPC.test(path)

/** The path as a rule pattern: each variable segment "*" (gRPC method paths as they are). */
export function generalizePath (path: string): string {
  if (isGrpcPath(path)) return path
  const segs = path.split('/').slice(1)
  const out = segs.map(s => isVariableSegment(s) ? '*' : s)
  const joined = `/${out.join('/')}`
  // A pattern with "*" cannot end in "/" (the request's segments never include the empty last one).
  return joined.includes('*') && joined.length > 1 && joined.endsWith('/') ? joined.slice(0, -1) : joined
}

const bump = (m: Map<string, Seen>, key: string, time: string): void => {
  const s = m.get(key)
  if (s === undefined) m.set(key, { count: 1, first: time, last: time })
  else { s.count++; if (time < s.first) s.first = time; if (time > s.last) s.last = time }
}

const merge = (a: Seen | undefined, b: Seen): Seen => a === undefined ? { ...b } : { count: a.count + b.count, first: a.first < b.first ? a.first : b.first, last: a.last > b.last ? a.last : b.last }

/** Was this logged request served? Allowed, or denied in audit mode (enforced false). */
export const wasServed = (d: Record<string, unknown>): boolean => d.decision === 'allow' || (d.decision === 'deny' && d.enforced === false)

export interface SuggestedRule { name: string, from: string, methods?: string[], paths?: string[], ports?: number[], seen: Seen }

export class PolicySuggester {
  private readonly opts: SuggestOptions
  /** caller \t method \t pattern (or caller \t TCP \t port) → how often and when. */
  private readonly routes = new Map<string, Seen>()
  scanned = 0
  used = 0
  constructor (opts: SuggestOptions) { this.opts = opts }

  /** One decision line, as it streams by. */
  add (d: Record<string, unknown>): void {
    if (d.msg !== 'decision' || d.callee !== this.opts.callee) return
    this.scanned++
    if (!wasServed(d) || typeof d.caller !== 'string' || callerPatternProblem(d.caller) !== undefined) return
    const time = String(d.time ?? '')
    if (this.opts.since !== undefined && new Date(time) < this.opts.since) return
    if (d.kind === 'tcp' || d.method === 'TCP') {
      if (typeof d.port !== 'number') return
      bump(this.routes, `${d.caller}\tTCP\t${d.port}`, time)
    } else {
      if (typeof d.path !== 'string' || typeof d.method !== 'string') return
      bump(this.routes, `${d.caller}\t${d.method}\t${generalizePath(d.path)}`, time)
    }
    this.used++
  }

  /** The rules, per caller and per set of methods (TCP: one rule per caller with its ports). */
  rules (): SuggestedRule[] {
    const min = this.opts.minCalls ?? 1
    // caller → method → pattern → seen
    const byCaller = new Map<string, Map<string, Map<string, Seen>>>()
    for (const [key, seen] of this.routes) {
      const [caller, method, pattern] = key.split('\t') as [string, string, string]
      let methods = byCaller.get(caller)
      if (methods === undefined) byCaller.set(caller, methods = new Map())
      let paths = methods.get(method)
      if (paths === undefined) methods.set(method, paths = new Map())
      paths.set(pattern, seen)
    }
    const rules: SuggestedRule[] = []
    const names = new Set<string>()
    for (const caller of [...byCaller.keys()].sort()) {
      const methods = byCaller.get(caller)!
      // pattern → methods seen on it (after collapsing), and the HTTP patterns grouped by that method set.
      const patternMethods = new Map<string, { methods: Set<string>, seen: Seen }>()
      for (const [method, paths] of methods) {
        if (method === 'TCP') continue
        for (const [collapsed, seen] of collapse(paths, this.opts.widen === true)) {
          if (seen.count < min) continue
          const pattern = tidy(collapsed)
          const pm = patternMethods.get(pattern) ?? { methods: new Set<string>(), seen: undefined as unknown as Seen }
          pm.methods.add(method)
          pm.seen = merge(pm.seen, seen)
          patternMethods.set(pattern, pm)
        }
      }
      const groups = new Map<string, { methods: string[], paths: string[], seen: Seen | undefined }>()
      for (const [pattern, pm] of [...patternMethods].sort((a, b) => a[0] < b[0] ? -1 : 1)) {
        const ms = [...pm.methods].sort()
        const g = groups.get(ms.join(',')) ?? { methods: ms, paths: [], seen: undefined }
        g.paths.push(pattern)
        g.seen = merge(g.seen, pm.seen)
        groups.set(ms.join(','), g)
      }
      const base = ruleBase(caller)
      for (const g of groups.values()) rules.push({ name: unique(names, `${base}-${g.methods.join('-').toLowerCase()}`), from: caller, methods: g.methods, paths: g.paths, seen: g.seen! })
      const tcp = [...(methods.get('TCP') ?? new Map<string, Seen>())].filter(([, s]) => s.count >= min)
      if (tcp.length > 0) {
        rules.push({ name: unique(names, `${base}-tcp`), from: caller, ports: tcp.map(([p]) => Number(p)).sort((a, b) => a - b), seen: tcp.reduce<Seen | undefined>((a, [, s]) => merge(a, s), undefined)! })
      }
    }
    return rules
  }

  /** The policy as YAML, each rule with a comment: its call count and first and last seen. */
  yaml (): string {
    const q = (s: string): string => JSON.stringify(s)
    const rules = this.rules()
    const head = [
      `# Suggested by 'gatehouse policy suggest' for ${this.opts.callee}`,
      `# from ${this.used} served request(s) of ${this.scanned} decision(s)${this.opts.since === undefined ? '' : ` since ${this.opts.since.toISOString()}`}${(this.opts.minCalls ?? 1) > 1 ? `, routes seen at least ${this.opts.minCalls} times` : ''}.`,
      `# Review it, then replay it: gatehouse policy replay POLICY LOG... --callee ${this.opts.callee} --trust-bundle FILE`,
      'version: 1'
    ]
    if (rules.length === 0) return `${head.join('\n')}\nrules: []\n`
    const body = rules.flatMap(r => [
      `  # ${r.seen.count} call(s), first seen ${r.seen.first}, last seen ${r.seen.last}`,
      `  - name: ${r.name}`,
      `    from: [${q(r.from)}]`,
      ...(r.methods === undefined ? [] : [`    methods: [${r.methods.join(', ')}]`]),
      ...(r.paths === undefined ? [] : [`    paths: [${r.paths.map(q).join(', ')}]`]),
      ...(r.ports === undefined ? [] : [`    ports: [${r.ports.join(', ')}]`])
    ])
    return `${head.join('\n')}\nrules:\n${body.join('\n')}\n`
  }
}

/**
 * One caller's patterns for one method, collapsed further: a position where SIBLINGS or more
 * distinct values share the rest of the path becomes "*" (still one segment); with `widen`, two or
 * more paths under the same two leading segments become "/a/b/**" (which also covers "/a/b").
 */
function collapse (paths: Map<string, Seen>, widen: boolean): Map<string, Seen> {
  let current = new Map(paths)
  const maxLen = Math.max(0, ...[...current.keys()].map(p => p.split('/').length - 1))
  for (let pos = 0; pos < maxLen; pos++) {
    const groups = new Map<string, Set<string>>()
    for (const p of current.keys()) {
      if (isGrpcPath(p)) continue
      const segs = p.split('/').slice(1)
      if (pos >= segs.length || segs[pos] === '*') continue
      const key = `${segs.length}\t${segs.map((s, i) => i === pos ? '' : s).join('/')}`
      const set = groups.get(key) ?? new Set<string>()
      set.add(segs[pos]!)
      groups.set(key, set)
    }
    const next = new Map<string, Seen>()
    for (const [p, seen] of current) {
      const segs = p.split('/').slice(1)
      const key = `${segs.length}\t${segs.map((s, i) => i === pos ? '' : s).join('/')}`
      const wide = !isGrpcPath(p) && pos < segs.length && (groups.get(key)?.size ?? 0) >= SIBLINGS
      const out = wide ? `/${segs.map((s, i) => i === pos ? '*' : s).join('/')}` : p
      next.set(out, merge(next.get(out), seen))
    }
    current = next
  }
  if (!widen) return current
  const byPrefix = new Map<string, string[]>()
  for (const p of current.keys()) {
    const segs = p.split('/').slice(1)
    if (isGrpcPath(p) || segs.length < 2) continue
    const prefix = `/${segs.slice(0, 2).join('/')}`
    byPrefix.set(prefix, [...byPrefix.get(prefix) ?? [], p])
  }
  const out = new Map<string, Seen>()
  for (const [p, seen] of current) {
    const segs = p.split('/').slice(1)
    const prefix = `/${segs.slice(0, 2).join('/')}`
    const wide = !isGrpcPath(p) && segs.length >= 2 && (byPrefix.get(prefix)?.length ?? 0) >= 2 && !segs.slice(0, 2).includes('*')
    const key = wide ? `${prefix}/**` : p
    out.set(key, merge(out.get(key), seen))
  }
  return out
}

/** A valid pattern: a segment with a literal "*" in it becomes "*", and a pattern with "*" does not end in "/". */
function tidy (pattern: string): string {
  const p = pattern.split('/').map(s => s !== '**' && s.includes('*') ? '*' : s).join('/')
  return p.includes('*') && p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p
}

/** A readable rule name from a caller ID: ".../ns/orders/sa/api" → "orders-api". */
function ruleBase (caller: string): string {
  const segs = caller.replace(/^spiffe:\/\/[^/]+\//, '').split('/')
  const parts = segs.length === 4 && segs[0] === 'ns' && segs[2] === 'sa' ? [segs[1]!, segs[3]!] : segs
  const base = parts.join('-').replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '')
  return (base === '' ? 'caller' : base).slice(0, 40)
}

function unique (names: Set<string>, wanted: string): string {
  let name = wanted.slice(0, 63)
  for (let i = 2; names.has(name) || name === 'canary' || name === 'quarantine'; i++) name = `${wanted.slice(0, 58)}-${i}`
  names.add(name)
  return name
}
