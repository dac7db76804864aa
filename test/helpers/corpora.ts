import { readFileSync, existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join, resolve } from 'node:path'

// The conformance corpora live in ../shared beside the checkout (as CI has it); tests read them
// from there and never copy them in. GATEHOUSE_CORPORA overrides the location.
const here = fileURLToPath(new URL('.', import.meta.url))
export const corporaDir = process.env.GATEHOUSE_CORPORA ?? resolve(here, '../../../shared/corpora')

export function corpusPath (...parts: string[]): string {
  const p = join(corporaDir, ...parts)
  if (!existsSync(p)) throw new Error(`corpus file missing: ${p} (is ../shared beside the checkout?)`)
  return p
}

export function readCorpusJson<T = any> (...parts: string[]): T {
  return JSON.parse(readFileSync(corpusPath(...parts), 'utf8')) as T
}
