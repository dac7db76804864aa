/** A subcommand: returns an exit code, or undefined when it started a long-running server. */
export type Runner = (argv: string[], io: CliIo) => Promise<number | undefined>

export interface CliIo {
  out: (text: string) => void
  /** Registers a cleanup to run on SIGTERM/SIGINT before exit (drain servers). */
  onShutdown: (fn: () => Promise<void>) => void
}
