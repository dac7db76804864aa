import { AsyncResource } from 'node:async_hooks'

// node:http2's client starts every request through AsyncResource#bind (ClientHttp2Session.request),
// and on Node 24 bind() also defines the deprecated `asyncResource` accessor (DEP0172) on the
// function it returns: two deprecate() wrappers and an ObjectDefineProperties with accessors per
// request. Node's main branch has removed that property (nodejs/node#58618); this installs the
// same bind as there: the same async context (runInAsyncScope on the same resource, with the same
// `this`, arguments and `length`), without the deprecated property. In a bare node:http2 client
// that is about a fifth of the CPU per request (bench/README.md, issue 21); for Gatehouse, every
// request on the mesh link and every gRPC call to the app. Nothing in Gatehouse reads the property.

type Bind = (this: AsyncResource, fn: (...args: unknown[]) => unknown, thisArg?: unknown) => (...args: unknown[]) => unknown

const lean: Bind = function bind (fn, thisArg) {
  if (typeof fn !== 'function') throw Object.assign(new TypeError(`The "fn" argument must be of type function. Received ${typeof fn}`), { code: 'ERR_INVALID_ARG_TYPE' })
  const resource = this
  const bound = thisArg === undefined
    ? function (this: unknown, ...args: unknown[]) { return resource.runInAsyncScope(fn, this, ...args) }
    : resource.runInAsyncScope.bind(resource, fn, thisArg) as (...args: unknown[]) => unknown
  Object.defineProperty(bound, 'length', { configurable: true, enumerable: false, value: fn.length, writable: false })
  return bound
}

/** Whether this Node's bind() still defines the deprecated accessor (a Node without it is left alone). */
export function bindDefinesAsyncResource (): boolean {
  const bound = new AsyncResource('gatehouse-probe').bind(() => {})
  return typeof Object.getOwnPropertyDescriptor(bound, 'asyncResource')?.get === 'function'
}

/** Installs the lean bind once per process, on a Node whose bind still pays for DEP0172. */
export function useLeanAsyncBind (): void {
  const proto = AsyncResource.prototype as unknown as { bind: Bind }
  if (proto.bind === lean || !bindDefinesAsyncResource()) return
  proto.bind = lean
}
