import { readFileSync, existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join, resolve } from 'node:path'

// The conformance corpora (SPIFFE IDs, X.509-SVID rules, path normalization, HTTP smuggling,
// AdmissionReviews) are part of the repository, under test/corpora/; test/corpora/README.md gives
// each file's source and licence. GATEHOUSE_CORPORA points the tests at another copy (to compare
// with a newer version of the corpora).
const here = fileURLToPath(new URL('.', import.meta.url))
export const corporaDir = process.env.GATEHOUSE_CORPORA ?? resolve(here, '../corpora')

export function corpusPath (...parts: string[]): string {
  const p = join(corporaDir, ...parts)
  if (!existsSync(p)) throw new Error(`corpus file missing: ${p} (the corpora live in test/corpora/)`)
  return p
}

export function readCorpusJson<T = any> (...parts: string[]): T {
  return JSON.parse(readFileSync(corpusPath(...parts), 'utf8')) as T
}
