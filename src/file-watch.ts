import { open } from 'node:fs/promises'
import { createHash } from 'node:crypto'

// Polls files by content hash. Kubernetes updates Secret and ConfigMap mounts by swapping a symlink,
// which inotify-based fs.watch misses or reports on the wrong path; hashing small files every couple
// of seconds sees every change, whatever wrote it (kubelet, cert-manager, spiffe-helper, an editor).

export interface FileWatch { stop: () => void, check: () => Promise<void> }

/** The files' bytes as read by one poll, in the order given (undefined: missing or unreadable). */
export type FileContents = Array<Buffer | undefined>

export interface WatchOptions {
  /**
   * Hand a change over only once two consecutive polls saw the same bytes, size and mtime, so a file
   * being written in place is not read half-done (unless the writer pauses longer than a poll).
   */
  settle?: boolean
  /** Called at a poll that saw a change still settling. */
  onSettling?: (contents: FileContents) => void
  /**
   * What the caller already loaded, to compare the first poll with. Without it the first poll only
   * records what it reads, and a change made before that poll completes is never reported.
   */
  baseline?: FileContents
}

interface Snapshot { contents: FileContents, content: string, stable: string }

function contentHash (contents: FileContents): string {
  const h = createHash('sha256')
  // Length-prefixed, so no file's bytes read the same as a missing file or as another split.
  for (const bytes of contents) h.update(bytes === undefined ? 'missing;' : `${bytes.length};`).update(bytes ?? '')
  return h.digest('hex')
}

async function snapshot (paths: string[]): Promise<Snapshot> {
  const stat = createHash('sha256')
  const contents: FileContents = []
  for (const p of paths) {
    try {
      // One open file for both, so the stat and the bytes are of the same file (a rename may swap it).
      const fh = await open(p, 'r')
      try {
        const st = await fh.stat()
        contents.push(await fh.readFile())
        stat.update(`${st.size}:${st.mtimeMs}:${st.ino}`)
      } finally { await fh.close() }
    } catch {
      contents.push(undefined)
    }
    stat.update('\0')
  }
  const content = contentHash(contents)
  return { contents, content, stable: `${content}/${stat.digest('hex')}` }
}

/** Calls onChange with the new bytes when the files' content changes (a touch is not a change). */
export function watchFiles (paths: string[], intervalMs: number, onChange: (contents: FileContents) => void | Promise<void>, opts: WatchOptions = {}): FileWatch {
  let last = opts.baseline === undefined ? undefined : contentHash(opts.baseline)
  let settling: string | undefined
  let running = false
  const check = async (): Promise<void> => {
    if (running) return
    running = true
    try {
      const now = await snapshot(paths)
      if (last === undefined || now.content === last) { last = now.content; settling = undefined; return }
      if (opts.settle === true && now.stable !== settling) {
        settling = now.stable
        opts.onSettling?.(now.contents)
        return
      }
      settling = undefined
      await onChange(now.contents)
      last = now.content
    } finally { running = false }
  }
  void check()
  const timer = setInterval(() => { void check() }, intervalMs)
  timer.unref()
  return { stop: () => { clearInterval(timer) }, check }
}
