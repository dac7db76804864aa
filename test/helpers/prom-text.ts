// A strict reader for the Prometheus text exposition format (version 0.0.4), for tests: it throws,
// naming the line, on anything a Prometheus server would reject or that the format forbids: bad
// metric or label names, unknown escapes, unquoted or repeated labels, a TYPE after samples or twice,
// a family whose samples are not contiguous, a repeated series, histogram buckets that are not
// cumulative or do not end in +Inf = _count, a missing final newline.

export interface Sample { name: string, labels: Record<string, string>, value: number, line: number }
export interface Family { name: string, type: string, help: string | undefined, samples: Sample[] }

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/
// Values are what Go's strconv.ParseFloat reads (so NaN and Inf in any case: prom-client writes "Nan").
const VALUE = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity)|nan)$/i
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

export class PromParseError extends Error {
  override name = 'PromParseError'
}

function parseValue (text: string, where: string): number {
  if (!VALUE.test(text)) throw new PromParseError(`${where}: "${text}" is not a sample value`)
  const lower = text.toLowerCase()
  if (lower === 'nan') return NaN
  if (/^[+-]?inf/.test(lower)) return lower.startsWith('-') ? -Infinity : Infinity
  return Number(text)
}

/** Undoes the escapes allowed in `allowed` (HELP: \\ and \n; label values: also \"). */
function unescape (text: string, allowed: string, where: string): string {
  let out = ''
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (c !== '\\') { out += c; continue }
    const next = text[++i]
    if (next === undefined || !allowed.includes(next)) throw new PromParseError(`${where}: invalid escape "\\${next ?? ''}"`)
    out += next === 'n' ? '\n' : next
  }
  return out
}

function parseLabels (text: string, start: number, where: string): { labels: Record<string, string>, end: number } {
  const labels: Record<string, string> = {}
  let i = start
  while (text[i] !== '}') {
    const eq = text.indexOf('=', i)
    if (eq === -1) throw new PromParseError(`${where}: label without "="`)
    const name = text.slice(i, eq)
    if (!LABEL_NAME.test(name) || name.startsWith('__')) throw new PromParseError(`${where}: invalid label name "${name}"`)
    if (name in labels) throw new PromParseError(`${where}: label "${name}" repeated`)
    if (text[eq + 1] !== '"') throw new PromParseError(`${where}: value of label "${name}" is not quoted`)
    let j = eq + 2
    let raw = ''
    for (;; j++) {
      const c = text[j]
      if (c === undefined || c === '\n') throw new PromParseError(`${where}: unterminated value of label "${name}"`)
      if (c === '\\') { raw += c + (text[j + 1] ?? ''); j++; continue }
      if (c === '"') break
      raw += c
    }
    labels[name] = unescape(raw, '\\"n', where)
    i = j + 1
    if (text[i] === ',') i++
    else if (text[i] !== '}') throw new PromParseError(`${where}: expected "," or "}" after label "${name}"`)
  }
  return { labels, end: i + 1 }
}

const seriesKey = (s: Sample): string => `${s.name}{${Object.keys(s.labels).sort().map(k => `${k}=${JSON.stringify(s.labels[k])}`).join(',')}}`

export function parsePrometheusText (text: string): Map<string, Family> {
  if (text.length > 0 && !text.endsWith('\n')) throw new PromParseError('the exposition does not end with a newline')
  const families = new Map<string, Family>()
  const finished = new Set<string>()
  const typed = new Set<string>()
  const series = new Set<string>()
  let current: string | undefined
  const family = (name: string): Family => {
    let f = families.get(name)
    if (f === undefined) { f = { name, type: 'untyped', help: undefined, samples: [] }; families.set(name, f) }
    return f
  }
  const lines = text.split('\n').slice(0, -1)
  for (const [index, line] of lines.entries()) {
    const where = `line ${index + 1}`
    if (line.trim() === '') continue
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line)
      if (m === null) continue // any other comment
      const [, kind, name, rest = ''] = m
      if (!METRIC_NAME.test(name!)) throw new PromParseError(`${where}: invalid metric name "${name!}"`)
      const f = family(name!)
      if (kind === 'HELP') {
        if (f.help !== undefined) throw new PromParseError(`${where}: second HELP for ${name!}`)
        f.help = unescape(rest, '\\n', where)
      } else {
        if (!TYPES.has(rest)) throw new PromParseError(`${where}: unknown type "${rest}"`)
        if (typed.has(name!)) throw new PromParseError(`${where}: second TYPE for ${name!}`)
        if (f.samples.length > 0) throw new PromParseError(`${where}: TYPE for ${name!} after its samples`)
        f.type = rest
        typed.add(name!)
      }
      continue
    }
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)
    if (nameMatch === null) throw new PromParseError(`${where}: a sample must start with a metric name`)
    const name = nameMatch[0]
    let i = name.length
    let labels: Record<string, string> = {}
    if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i + 1, where))
    const rest = line.slice(i)
    const m = /^[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$/.exec(rest)
    if (m === null) throw new PromParseError(`${where}: expected " value [timestamp]" after the series, got "${rest}"`)
    const sample: Sample = { name, labels, value: parseValue(m[1]!, where), line: index + 1 }
    // The family: the name itself, or a histogram/summary it is the _bucket/_sum/_count of.
    const base = /^(.*)_(bucket|sum|count)$/.exec(name)
    const parent = base !== null && ['histogram', 'summary'].includes(families.get(base[1]!)?.type ?? '') && !(base[2] === 'bucket' && families.get(base[1]!)?.type === 'summary') ? base[1]! : name
    const f = family(parent)
    if (current !== parent) {
      if (finished.has(parent)) throw new PromParseError(`${where}: samples of ${parent} are not contiguous`)
      if (current !== undefined) finished.add(current)
      current = parent
    }
    if (f.type === 'histogram' && name === parent) throw new PromParseError(`${where}: histogram ${parent} sample without _bucket/_sum/_count`)
    if (f.type === 'counter' && (Number.isNaN(sample.value) || sample.value < 0)) throw new PromParseError(`${where}: counter ${name} is ${m[1]!}`)
    const key = seriesKey(sample)
    if (series.has(key)) throw new PromParseError(`${where}: series ${key} repeated`)
    series.add(key)
    f.samples.push(sample)
  }
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f)
  return families
}

function checkHistogram (f: Family): void {
  const groups = new Map<string, { buckets: Sample[], count?: Sample, sum?: Sample }>()
  const keyOf = (labels: Record<string, string>): string => JSON.stringify(Object.entries(labels).filter(([k]) => k !== 'le').sort())
  const group = (labels: Record<string, string>): { buckets: Sample[], count?: Sample, sum?: Sample } => {
    const k = keyOf(labels)
    let g = groups.get(k)
    if (g === undefined) { g = { buckets: [] }; groups.set(k, g) }
    return g
  }
  for (const s of f.samples) {
    if (s.name === `${f.name}_bucket`) {
      if (s.labels.le === undefined) throw new PromParseError(`line ${s.line}: bucket of ${f.name} without "le"`)
      group(s.labels).buckets.push(s)
    } else if (s.name === `${f.name}_count`) group(s.labels).count = s
    else group(s.labels).sum = s
  }
  for (const [k, g] of groups) {
    const les = g.buckets.map(b => parseValue(b.labels.le!, `line ${b.line}`))
    for (let i = 1; i < g.buckets.length; i++) {
      if (!(les[i]! > les[i - 1]!)) throw new PromParseError(`line ${g.buckets[i]!.line}: ${f.name} buckets not in increasing "le" order`)
      if (g.buckets[i]!.value < g.buckets[i - 1]!.value) throw new PromParseError(`line ${g.buckets[i]!.line}: ${f.name} buckets are not cumulative`)
    }
    if (les.at(-1) !== Infinity) throw new PromParseError(`${f.name} ${k}: no le="+Inf" bucket`)
    if (g.count === undefined || g.sum === undefined) throw new PromParseError(`${f.name} ${k}: no _count or _sum`)
    if (g.count.value !== g.buckets.at(-1)!.value) throw new PromParseError(`line ${g.count.line}: ${f.name}_count differs from its +Inf bucket`)
  }
}
