// The well-known ports, defined once: the sidecar's inbound (mTLS), outbound (the app's HTTP_PROXY)
// and admin (probes, metrics) listeners, and the CA's API. Flags override each; the injector, the
// capture rules and the routes file's defaults all read them from here.

export const PORTS = {
  inbound: 15006,
  outbound: 15001,
  admin: 15020,
  ca: 15443
} as const
