import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { JUMP_RULE, iptablesRules, type CaptureOptions } from './iptables.ts'
import { CaptureError } from '../errors.ts'

// Applying the capture rules (iptables.ts) in the current network namespace: `gatehouse capture
// iptables` in the init container. Apart from the pure rules so the injector, which only describes
// the init container, never loads a module that spawns processes.

export interface ExecResult { code: number | null, stdout: string, stderr: string }
export type Exec = (file: string, args: string[], input?: string) => Promise<ExecResult>

/** execFile with stdin, no shell; a missing binary is reported as a CaptureError. */
export const execWithInput: Exec = async (file, args, input) => await new Promise((resolve, reject) => {
  const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], shell: false })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  child.on('error', (err: NodeJS.ErrnoException) => {
    reject(new CaptureError(err.code === 'ENOENT' ? `${file} not found: the capture image needs the iptables package (build the Dockerfile's "capture" target)` : `cannot run ${file}: ${err.message}`))
  })
  child.on('close', code => { resolve({ code, stdout, stderr }) })
  child.stdin.on('error', () => { /* the process exited early: its status tells why */ })
  child.stdin.end(input ?? '')
})

export interface ApplyOptions extends CaptureOptions {
  /** Also install the rules for IPv6 with ip6tables-restore. */
  ipv6: boolean
  exec?: Exec
}

export interface ApplyReport { family: 'ipv4' | 'ipv6', jumpAdded: boolean }

/** Whether this network namespace has IPv6 (the kernel lists IPv6 addresses there). */
export function ipv6Available (): boolean {
  return existsSync('/proc/net/if_inet6')
}

/** Installs the rules in the current network namespace. Needs CAP_NET_ADMIN (and NET_RAW for the nat table). */
export async function applyCapture (opts: ApplyOptions): Promise<ApplyReport[]> {
  const exec = opts.exec ?? execWithInput
  const families = [['ipv4', 'iptables'] as const, ...(opts.ipv6 ? [['ipv6', 'ip6tables'] as const] : [])]
  const reports: ApplyReport[] = []
  for (const [family, bin] of families) {
    // -C exits 0 when the rule exists (1 when it does not, or when the chain does not exist yet).
    const present = (await exec(bin, ['-t', 'nat', '-C', ...JUMP_RULE])).code === 0
    const r = await exec(`${bin}-restore`, ['--noflush'], iptablesRules(opts, { withJump: !present }))
    if (r.code !== 0) throw new CaptureError(`${bin}-restore failed (exit ${String(r.code)}): ${r.stderr.trim().slice(0, 2000)}`)
    reports.push({ family, jumpAdded: !present })
  }
  return reports
}
