import { parseDocument, LineCounter, isMap, isScalar, type Node, type YAMLMap } from 'yaml'

// YAML with positions, for files written by people (policies, routes): every problem is reported as
// file:line:col so the author can go straight to it.

export interface YamlSource {
  root: Node | null
  /** "file:line:col" of a node (or just "file"). */
  at: (node: Node | null | undefined) => string
  /** Syntax problems; the document should not be used when non-empty. */
  problems: string[]
}

export function readYamlSource (text: string, source: string): YamlSource {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const at = (node: Node | null | undefined): string => {
    const offset = node?.range?.[0]
    if (offset === undefined) return source
    const { line, col } = lineCounter.linePos(offset)
    return `${source}:${line}:${col}`
  }
  const problems = doc.errors.map((e) => {
    const { line, col } = lineCounter.linePos(e.pos[0])
    return `${source}:${line}:${col}: YAML syntax: ${e.message.split('\n')[0]}`
  })
  return { root: doc.contents, at, problems }
}

export function mapGet (map: YAMLMap, key: string): Node | undefined {
  const pair = map.items.find(p => isScalar(p.key) && p.key.value === key)
  return pair?.value as Node | undefined
}

/** Problems for keys of `map` not in `allowed` (a typo must not silently change meaning). */
export function unknownKeys (map: YAMLMap, allowed: readonly string[], at: YamlSource['at'], where: string): string[] {
  return map.items.flatMap((pair) => {
    const key = isScalar(pair.key) ? String(pair.key.value) : '?'
    return allowed.includes(key) ? [] : [`${at(pair.key as Node)}: ${where === '' ? '' : `${where}: `}unknown key "${key}" (expected one of ${allowed.join(', ')})`]
  })
}

export { isMap, isScalar }
