import { readFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'

// Polls files by content hash. Kubernetes updates Secret and ConfigMap mounts by swapping a symlink,
// which inotify-based fs.watch misses or reports on the wrong path; hashing small files every couple
// of seconds sees every change, whatever wrote it (kubelet, cert-manager, spiffe-helper, an editor).

export interface FileWatch { stop: () => void, check: () => Promise<void> }

export function watchFiles (paths: string[], intervalMs: number, onChange: () => void | Promise<void>): FileWatch {
  let last: string | undefined
  let running = false
  const fingerprint = async (): Promise<string> => {
    const h = createHash('sha256')
    for (const p of paths) {
      try { h.update(await readFile(p)) } catch (err) { h.update(`missing:${(err as NodeJS.ErrnoException).code ?? ''}`) }
      h.update('\0')
    }
    return h.digest('hex')
  }
  const check = async (): Promise<void> => {
    if (running) return
    running = true
    try {
      const now = await fingerprint()
      if (last !== undefined && now !== last) await onChange()
      last = now
    } finally { running = false }
  }
  void check()
  const timer = setInterval(() => { void check() }, intervalMs)
  timer.unref()
  return { stop: () => { clearInterval(timer) }, check }
}
