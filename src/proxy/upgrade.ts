// Which HTTP/1.1 Upgrade protocols the inbound listener relays after authorization. After a 101 the
// connection is a raw tunnel that no longer passes through authorization, so a protocol that carries
// further requests (h2c: a whole HTTP/2 connection of streams for any path) would let one allowed
// request open the door to every denied one. Only protocols on an explicit list are relayed.

/** Relayed by default: a WebSocket is one authorized exchange (its path was decided on). */
export const DEFAULT_UPGRADE_PROTOCOLS: readonly string[] = ['websocket']

/** Never relayed, whatever the flag says: each carries new requests that would skip the policy. */
export const NEVER_UPGRADE: readonly string[] = ['h2c', 'h2', 'http/2.0', 'http/1.1', 'http/1.0']

/** The protocol names in an Upgrade header ("websocket, h2c", "foo/2"), lower-cased, versions kept. */
export function offeredProtocols (header: string | undefined): string[] {
  if (header === undefined) return []
  return header.split(',').map(s => s.trim().toLowerCase()).filter(s => s !== '')
}

/** Problems with an --upgrade-protocols list, for the config error (empty when it is usable). */
export function upgradeListProblems (list: readonly string[]): string[] {
  const problems: string[] = []
  for (const p of list) {
    const name = p.trim().toLowerCase()
    if (!/^[a-z0-9!#$%&'*+.^_`|~-]+(\/[a-z0-9!#$%&'*+.^_`|~-]+)?$/.test(name)) problems.push(`"${p}" is not a protocol token (e.g. websocket)`)
    else if (NEVER_UPGRADE.includes(name)) problems.push(`"${p}" can never be relayed: after the upgrade its requests would not be authorized`)
  }
  return problems
}

/**
 * Of the protocols a client offers, those that may be relayed; a protocol with a version
 * ("websocket/13") matches a bare list entry ("websocket").
 */
export function allowedOffer (offered: readonly string[], allowed: ReadonlySet<string>): string[] {
  return offered.filter(p => !NEVER_UPGRADE.includes(p) && (allowed.has(p) || allowed.has(protocolName(p))))
}

/** "websocket/13" -> "websocket": the name a version-qualified protocol is listed and chosen by. */
export const protocolName = (protocol: string): string => protocol.split('/')[0]!
