// HOST:PORT as every flag and file of Gatehouse writes it (an IPv6 host in brackets): used by the
// configuration schema and, at runtime, by the routes file, so it lives below both.

export function parseHostPort (text: string): { host: string, port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text.trim())
  if (m === null) return undefined
  const port = Number(m[3])
  if (port > 65535) return undefined
  return { host: m[1] ?? m[2]!, port }
}
