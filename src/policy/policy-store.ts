import { readFileSync } from 'node:fs'
import type { Logger } from '../log.ts'
import { GatehouseError } from '../errors.ts'
import { parsePolicy, policyRevision } from './load.ts'
import { compilePolicy, type CompiledPolicy } from './compile.ts'
import { watchFiles, type FileWatch } from '../file-watch.ts'

// The current policy. A reload (file change or SIGHUP) parses and compiles the new file, and only a
// valid one replaces the current policy; an invalid one is logged and counted, never half-applied.
// A file edited in place can be valid halfway (allow rules written, deny rules not yet): the watcher
// applies a change only once it has settled, i.e. two consecutive polls saw the same file, and parses
// exactly those bytes. Atomic replacement (write aside, rename; a ConfigMap's symlink swap) is the
// supported way to update; a writer that pauses longer than a poll can still be read half-done.

export interface ActivePolicy { compiled: CompiledPolicy, revision: string, source: string }

export class PolicyStore {
  private active: ActivePolicy | undefined
  private readonly file: string
  private readonly logger: Logger
  private readonly onResult: (result: 'success' | 'invalid' | 'unchanged') => void
  private watch: FileWatch | undefined
  /** The file as the last reload read it (undefined: unreadable), for the watcher to start from. */
  private lastRead: { bytes: Buffer | undefined } | undefined
  /** Called after a new policy took effect: long-lived connections (opaque TCP) are judged again. */
  private readonly changed: Array<() => void> = []

  constructor (opts: { file: string, logger: Logger, onResult?: (result: 'success' | 'invalid' | 'unchanged') => void }) {
    this.file = opts.file
    this.logger = opts.logger
    this.onResult = opts.onResult ?? (() => {})
  }

  get current (): ActivePolicy | undefined { return this.active }

  onChange (fn: () => void): void { this.changed.push(fn) }

  /** Loads the file; returns false (and keeps the last good policy) if it is invalid or unreadable. */
  reload (trigger: string): boolean {
    let text: string
    try {
      const bytes = readFileSync(this.file)
      this.lastRead = { bytes }
      text = bytes.toString('utf8')
    } catch (err) {
      this.lastRead = { bytes: undefined }
      this.onResult('invalid')
      this.logger.error({ event: 'policy.reload_failed', code: 'GH_POLICY_UNREADABLE', trigger, file: this.file, reason: (err as Error).message, keptRevision: this.active?.revision ?? null }, 'cannot read policy; keeping the last good one')
      return false
    }
    return this.apply(text, trigger)
  }

  /** Parses and compiles `text`; only a valid policy replaces the current one. */
  private apply (text: string, trigger: string): boolean {
    try {
      const loaded = parsePolicy(text, this.file)
      if (loaded.revision === this.active?.revision) { this.onResult('unchanged'); return true }
      this.active = { compiled: compilePolicy(loaded.policy), revision: loaded.revision, source: this.file }
      this.onResult('success')
      this.logger.info({ event: 'policy.loaded', trigger, file: this.file, revision: loaded.revision, mode: loaded.policy.mode, rules: loaded.policy.rules.length, denyRules: loaded.policy.deny.length }, 'policy loaded')
      for (const fn of this.changed) fn()
      return true
    } catch (err) {
      this.onResult('invalid')
      const problems = err instanceof GatehouseError && 'problems' in err ? (err as unknown as { problems: string[] }).problems : [(err as Error).message]
      this.logger.error({ event: 'policy.reload_failed', code: 'GH_POLICY_INVALID', trigger, file: this.file, problems, keptRevision: this.active?.revision ?? null }, 'invalid policy rejected; keeping the last good one')
      return false
    }
  }

  /** Polls the file every intervalMs; a change is applied once two consecutive polls agree. */
  watchFile (intervalMs: number): void {
    this.watch = watchFiles([this.file], intervalMs, ([bytes]) => {
      if (bytes === undefined) this.reload('file-change') // gone or unreadable: reload says why, and keeps the last good one
      else this.apply(bytes.toString('utf8'), 'file-change')
    }, {
      settle: true,
      ...(this.lastRead === undefined ? {} : { baseline: [this.lastRead.bytes] }),
      onSettling: ([bytes]) => {
        this.logger.debug({ event: 'policy.change_settling', file: this.file, revision: bytes === undefined ? null : policyRevision(bytes.toString('utf8')) }, 'policy file changed; applied once it stops changing')
      }
    })
  }

  stop (): void { this.watch?.stop() }
}
