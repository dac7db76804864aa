import { readFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { ConfigInvalidError, fileUnreadable } from './errors.ts'
import { parseHostPort } from './hostport.ts'

// The one configuration schema. Each role declares its options once; values come from, in rising
// precedence: defaults, a YAML file (--config / GATEHOUSE_CONFIG, keys are the flag names),
// GATEHOUSE_<FLAG> environment variables, and command-line flags. Every problem is collected and
// reported at once, naming the key, where the value came from, and what was expected.

type Kind = 'string' | 'int' | 'duration' | 'bool' | 'hostport' | 'list' | 'enum'

export interface OptionSpec {
  kind: Kind
  help: string
  default?: string | number | boolean | string[]
  required?: boolean
  values?: readonly string[]
  min?: number
  /** Other spellings on the command line: one letter is -X (kubectl's -o), longer ones --NAME (an old flag name kept working). */
  aliases?: readonly string[]
}

export type Schema = Record<string, OptionSpec>

type ValueOf<S extends OptionSpec> =
  S['kind'] extends 'int' | 'duration' ? number
    : S['kind'] extends 'bool' ? boolean
      : S['kind'] extends 'list' ? string[]
        : S['kind'] extends 'hostport' ? { host: string, port: number }
          : string

type CamelCase<K extends string> = K extends `${infer H}-${infer T}` ? `${H}${Capitalize<CamelCase<T>>}` : K

/** The typed result: kebab-case flag names become camelCase keys. Options with no default and not required may be undefined. */
export type ConfigOf<S extends Schema> = {
  [K in keyof S & string as CamelCase<K>]: S[K] extends { required: true } | { default: unknown } ? ValueOf<S[K]> : ValueOf<S[K]> | undefined
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** "500ms", "30s", "10m", "1h", "90d" to milliseconds; undefined if malformed. */
export function parseDuration (text: string): number | undefined {
  const m = DURATION.exec(text.trim())
  return m === null ? undefined : Math.round(Number(m[1]) * UNIT_MS[m[2]!]!)
}


const camel = (k: string): string => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
export const envName = (flag: string): string => `GATEHOUSE_${flag.replace(/-/g, '_').toUpperCase()}`

function convert (spec: OptionSpec, raw: unknown): { value?: unknown, expected?: string } {
  const text = Array.isArray(raw) ? raw.map(String) : typeof raw === 'string' ? raw : raw === undefined || raw === null ? '' : String(raw)
  switch (spec.kind) {
    case 'string':
      return typeof text === 'string' && text !== '' ? { value: text } : { expected: 'a non-empty string' }
    case 'list': {
      const items = Array.isArray(text) ? text : text.split(',').map(s => s.trim()).filter(s => s !== '')
      return { value: items }
    }
    case 'enum':
      return spec.values?.includes(String(text)) === true ? { value: text } : { expected: `one of ${spec.values?.join(', ') ?? ''}` }
    case 'bool':
      if (raw === true || raw === false) return { value: raw }
      if (['true', '1', 'yes'].includes(String(text))) return { value: true }
      if (['false', '0', 'no'].includes(String(text))) return { value: false }
      return { expected: 'true or false' }
    case 'int': {
      const n = Number(text)
      const min = spec.min ?? 0
      return /^-?\d+$/.test(String(text)) && Number.isSafeInteger(n) && n >= min ? { value: n } : { expected: `an integer >= ${min}` }
    }
    case 'duration': {
      const ms = parseDuration(String(text))
      const min = spec.min ?? 1
      return ms !== undefined && ms >= min ? { value: ms } : { expected: `a duration such as 500ms, 30s, 10m or 1h${min > 1 ? ` (at least ${min}ms)` : ''}` }
    }
    case 'hostport': {
      const hp = parseHostPort(String(text))
      return hp !== undefined ? { value: hp } : { expected: 'HOST:PORT, e.g. 127.0.0.1:15006 or [::1]:15006' }
    }
  }
}

export interface ConfigSources {
  argv: string[]
  env?: NodeJS.ProcessEnv
  /** How many positional arguments the command takes (default: any number). */
  maxPositionals?: number
}

/** The candidate closest to `word` (edit distance at most 2, or a prefix of it), for "did you mean". */
export function closest (word: string, candidates: readonly string[]): string | undefined {
  const distance = (a: string, b: string): number => {
    let row = Array.from({ length: b.length + 1 }, (_, j) => j)
    for (let i = 1; i <= a.length; i++) {
      const next = [i]
      for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
      row = next
    }
    return row[b.length]!
  }
  const scored = candidates.map(c => ({ c, d: c.startsWith(word) && word.length >= 3 ? 1 : distance(word, c) })).sort((x, y) => x.d - y.d)
  return scored[0] !== undefined && scored[0].d <= 2 ? scored[0].c : undefined
}

const didYouMean = (word: string, candidates: readonly string[], show: (c: string) => string): string => {
  const c = closest(word, candidates)
  return c === undefined ? '' : ` (did you mean ${show(c)}?)`
}

export interface ParsedArgs { flags: Map<string, string[]>, positionals: string[] }

/** Flag names as typed (aliases included, without dashes) to the option they set. */
function flagNames (schema: Schema): Map<string, string> {
  const names = new Map<string, string>()
  for (const [name, spec] of Object.entries(schema)) for (const alias of [name, ...(spec.aliases ?? [])]) names.set(alias, name)
  return names
}

/** The option name of a flag argument ("--path", "--path=/x", "-o", "-o=json"), or undefined for a positional ("-" is stdin). */
function flagOf (arg: string, names: Map<string, string>): { name: string, value?: string } | undefined {
  const m = /^--([^=]+)(?:=([\s\S]*))?$/.exec(arg) ?? /^-([a-zA-Z])(?:=([\s\S]*))?$/.exec(arg)
  if (m === null || (!arg.startsWith('--') && !names.has(m[1]!))) return undefined
  return { name: names.get(m[1]!) ?? m[1]!, ...(m[2] === undefined ? {} : { value: m[2] }) }
}

/** --flag value, --flag=value, --bool-flag, and aliases (-o json); repeated flags accumulate (for lists). */
export function parseArgs (argv: string[], schema: Schema): ParsedArgs {
  const flags = new Map<string, string[]>()
  const positionals: string[] = []
  const names = flagNames(schema)
  for (let i = 0; i < argv.length; i++) {
    const flag = flagOf(argv[i]!, names)
    if (flag === undefined) { positionals.push(argv[i]!); continue }
    // A bool flag not followed by a value (the end, or another flag) is a switch: --summary -o json.
    const next = argv[i + 1]
    const isSwitch = schema[flag.name]?.kind === 'bool' && (next === undefined || flagOf(next, names) !== undefined)
    const value = flag.value ?? (isSwitch ? 'true' : argv[++i] ?? '')
    flags.set(flag.name, [...(flags.get(flag.name) ?? []), value])
  }
  return { flags, positionals }
}

export function loadConfig<S extends Schema> (command: string, schema: S, sources: ConfigSources): ConfigOf<S> & { positionals: string[] } {
  const env = sources.env ?? process.env
  const full: Schema = { config: { kind: 'string', help: 'YAML file with option values' }, ...schema }
  const { flags, positionals } = parseArgs(sources.argv, full)
  const problems: string[] = []
  const raw = new Map<string, { value: unknown, from: string }>()

  const configFlag = flags.get('config')?.at(-1)
  const configFile = configFlag ?? env.GATEHOUSE_CONFIG
  // When the file itself cannot be used, options it may hold are not reported missing as well.
  let configUnusable = false
  if (configFile !== undefined && configFile !== '') {
    const label = configFlag === undefined ? 'GATEHOUSE_CONFIG' : '--config'
    let text: string | undefined
    try { text = readFileSync(configFile, 'utf8') } catch (err) {
      configUnusable = true
      problems.push(fileUnreadable(label, configFile, err).message)
    }
    if (text !== undefined) {
      try {
        const doc: unknown = parseYaml(text)
        if (doc !== null && doc !== undefined && (typeof doc !== 'object' || Array.isArray(doc))) {
          configUnusable = true
          problems.push(`${label} ${configFile}: expected a YAML mapping of option names to values, e.g. "${Object.keys(schema)[0] ?? 'listen'}: ..."`)
        } else {
          for (const [k, v] of Object.entries((doc ?? {}) as Record<string, unknown>)) {
            if (!(k in schema)) problems.push(`${configFile}: key "${k}" is not an option of 'gatehouse ${command}'${didYouMean(k, Object.keys(schema), c => `"${c}"`)} (options: ${Object.keys(schema).join(', ')})`)
            else raw.set(k, { value: v, from: `${configFile} key "${k}"` })
          }
        }
      } catch (err) {
        configUnusable = true
        problems.push(`${label} ${configFile}: not valid YAML: ${(err as Error).message.split('\n')[0]!.replace(/:$/, '')}; fix the file (keys are the flag names, e.g. "${Object.keys(schema)[0] ?? 'listen'}: ...")`)
      }
    }
  }
  for (const name of Object.keys(schema)) {
    const e = env[envName(name)]
    if (e !== undefined) raw.set(name, { value: e, from: `env ${envName(name)}` })
  }
  for (const [name, values] of flags) {
    if (name === 'config') continue
    const spec = schema[name]
    if (spec === undefined) { problems.push(`--${name}: unknown flag for 'gatehouse ${command}'${didYouMean(name, Object.keys(schema), c => `--${c}`)}`); continue }
    raw.set(name, { value: spec.kind === 'list' ? values.flatMap(v => v.split(',')).filter(v => v !== '') : values.at(-1), from: `--${name}` })
  }

  const out: Record<string, unknown> = { positionals }
  for (const [name, spec] of Object.entries(schema)) {
    const given = raw.get(name)
    const source = given ?? (spec.default !== undefined ? { value: spec.default, from: 'default' } : undefined)
    if (source === undefined) {
      if (spec.required === true && !configUnusable) problems.push(`--${name} is required (${spec.help}; or set ${envName(name)})`)
      continue
    }
    const { value, expected } = convert(spec, source.value)
    if (expected !== undefined) problems.push(`--${name} (from ${source.from}): expected ${expected}, got ${JSON.stringify(source.value)}`)
    else out[camel(name)] = value
  }
  const max = sources.maxPositionals
  if (max !== undefined && positionals.length > max) {
    const extra = positionals.slice(max)
    const asFlag = extra.length === 1 && max === 0 && Object.keys(schema).some(k => schema[k]!.required === true && raw.get(k) === undefined)
    problems.push(`unexpected argument${extra.length === 1 ? '' : 's'} ${extra.map(a => JSON.stringify(a)).join(' ')}: 'gatehouse ${command}' takes ${max === 0 ? 'only flags' : `at most ${max}`}${asFlag ? ' (values are given as --flag VALUE)' : ''}`)
  }
  if (problems.length > 0) throw new ConfigInvalidError(problems)
  return out as ConfigOf<S> & { positionals: string[] }
}

const VALUE_NAME: Record<Kind, string> = { string: 'string', int: 'int', duration: 'duration', bool: '', hostport: 'host:port', list: 'list', enum: '' }

/** How a flag is spelt: "-o, --output" (the letter alias first, as kubectl's help shows it). */
export function flagSpelling (name: string, spec: OptionSpec): string {
  return `${(spec.aliases ?? []).filter(a => a.length === 1).map(a => `-${a}, `).join('')}--${name}`
}

/** A flag as help shows it: "-o, --output table|json|yaml" (an enum's values listed). */
export function flagSynopsis (name: string, spec: OptionSpec): string {
  const value = spec.kind === 'enum' ? (spec.values ?? []).join('|') : VALUE_NAME[spec.kind]
  return `${flagSpelling(name, spec)}${value === '' ? '' : ` ${value}`}`
}

/** The help of one option, with its older names ("also --format"). */
export function flagHelp (spec: OptionSpec): string {
  const old = (spec.aliases ?? []).filter(a => a.length > 1).map(a => `--${a}`)
  return `${spec.help}${old.length === 0 ? '' : ` (also ${old.join(', ')})`}`
}

/** A default as typed on the command line ("a,b" for a list). */
export const defaultText = (d: NonNullable<OptionSpec['default']>): string => Array.isArray(d) ? d.join(',') : String(d)

const flagDescription = (spec: OptionSpec): string =>
  `${flagHelp(spec)}${spec.default === undefined ? (spec.required === true ? ' (required)' : '') : ` (default ${defaultText(spec.default)})`}`

/** The "Flags:" section of a command's help, generated from its schema (with the flags every command has). */
export function usage (schema: Schema): string {
  const rows: Array<[string, string]> = [
    ...Object.entries(schema).map(([name, s]): [string, string] => [flagSynopsis(name, s), flagDescription(s)]),
    ['--config FILE', 'YAML file of option values (or GATEHOUSE_CONFIG)'],
    ['-h, --help', 'this help']
  ]
  // Flags without a letter are indented past "-o, " so the long names line up, as in kubectl's help.
  const shown = rows.map(([f, h]): [string, string] => [f.startsWith('--') ? `    ${f}` : f, h])
  const width = Math.min(40, Math.max(...shown.map(([f]) => f.length)))
  const lines = shown.map(([f, h]) => `  ${f.padEnd(width)}  ${h}`)
  return `Flags:\n${lines.join('\n')}\nEvery flag can also be set as GATEHOUSE_<FLAG>, e.g. ${envName(Object.keys(schema)[0] ?? 'listen')}.`
}
