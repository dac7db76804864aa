import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

// Temp directories and file replacement, for every test.

export interface Teardown { teardown (fn: () => void | Promise<void>): void }

/** A fresh directory under the OS temp dir, removed at teardown. */
export function tempDir (t: Teardown, prefix = 'gh-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** Replaces a file in one step (write aside, then rename), as Kubernetes and editors do: a poll never sees it half-written. */
export function replaceFile (path: string, content: string, mode = 0o600): void {
  writeFileSync(`${path}.tmp`, content, { mode })
  renameSync(`${path}.tmp`, path)
}
