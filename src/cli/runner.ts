import { stringify } from 'yaml'
import type { Schema } from '../config.ts'

/** A subcommand: returns an exit code, or undefined when it started a long-running server. */
export type Runner = (argv: string[], io: CliIo) => Promise<number | undefined>

export interface CliIo {
  out: (text: string) => void
  /** Registers a cleanup to run on SIGTERM/SIGINT before exit (drain servers). */
  onShutdown: (fn: () => Promise<void>) => void
}

// `-o/--output` (kubectl's, istioctl's and linkerd's spelling) on every command that prints data:
// "table" is the form for people, json and yaml print the same data for scripts.

/** The -o/--output flag of a command that prints data; spread it into the command's schema. */
export const OUTPUT = {
  output: { kind: 'enum', values: ['table', 'json', 'yaml'], default: 'table', aliases: ['o'], help: 'output format: table for people; json or yaml for scripts' }
} as const satisfies Schema

/** `data` as JSON or YAML (for -o json|yaml). */
export function formatData (output: string, data: unknown): string {
  return output === 'yaml' ? stringify(data) : `${JSON.stringify(data, null, 2)}\n`
}
