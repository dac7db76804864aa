import t from 'tap'
import { AsyncLocalStorage, AsyncResource, createHook, executionAsyncId } from 'node:async_hooks'
import { createServer, connect } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { bindDefinesAsyncResource, useLeanAsyncBind } from '../src/proxy/async-bind.ts'

// The sidecar replaces AsyncResource#bind with Node main's (no deprecated `asyncResource` accessor,
// async-bind.ts): what a caller of bind() can observe must not change, the async context above all.

/** The async hook events of one bound call, with ids relative to the resource's. */
function hookTrace (bind: (r: AsyncResource, fn: () => number) => () => number): string[] {
  const r = new AsyncResource('gatehouse-test')
  const seen: string[] = []
  const hook = createHook({
    before (id) { if (id === r.asyncId()) seen.push('before') },
    after (id) { if (id === r.asyncId()) seen.push('after') }
  }).enable()
  const bound = bind(r, () => { seen.push(executionAsyncId() === r.asyncId() ? 'inside the resource' : 'outside'); return 1 })
  seen.push(`returned ${bound()}`)
  hook.disable()
  return seen
}

const stock = AsyncResource.prototype.bind
const stockTrace = hookTrace((r, fn) => r.bind(fn))

t.test('Node 24 still defines the deprecated accessor on every bound function (what this costs)', async t => {
  if (!bindDefinesAsyncResource()) { t.pass('this Node has dropped the asyncResource property (DEP0172): useLeanAsyncBind() leaves bind alone'); return }
  const bound = new AsyncResource('x').bind(() => {})
  t.type(Object.getOwnPropertyDescriptor(bound, 'asyncResource')?.get, 'function', 'a getter per bound function')
})

t.test('installed once; the same async context, this, arguments, length, result and errors', async t => {
  const before = bindDefinesAsyncResource()
  useLeanAsyncBind()
  const installed = AsyncResource.prototype.bind
  useLeanAsyncBind()
  t.equal(AsyncResource.prototype.bind, installed, 'a second call changes nothing')
  if (!before) { t.equal(installed, stock, 'left alone on a Node without the property'); return }
  t.not(installed, stock)
  t.notOk(bindDefinesAsyncResource(), 'no deprecated accessor any more')

  const als = new AsyncLocalStorage<string>()
  let bound: ((a: number, b: number) => unknown) | undefined
  let boundThis: (() => unknown) | undefined
  const receiver = { name: 'receiver' }
  als.run('caller-context', () => {
    const r = new AsyncResource('gatehouse-test')
    bound = r.bind(function (this: unknown, a: number, b: number) { return { store: als.getStore(), self: this, sum: a + b } })
    boundThis = (r.bind as (fn: () => unknown, thisArg: unknown) => () => unknown)(function (this: unknown) { return this }, receiver)
  })
  t.equal(als.getStore(), undefined, 'called from outside the caller\'s context')
  const self = { name: 'call-site this' }
  t.same(bound!.call(self, 2, 3), { store: 'caller-context', self, sum: 5 }, 'the store of where bind() was called; this and arguments of the call')
  t.equal(bound!.length, 2, 'length is the function\'s')
  t.equal(boundThis!(), receiver, 'an explicit thisArg wins')
  t.equal(boundThis!.length, 0)
  t.equal(Object.getOwnPropertyDescriptor(bound, 'asyncResource'), undefined)

  const staticBound = als.run('static', () => AsyncResource.bind(() => als.getStore()))
  t.equal(staticBound(), 'static', 'AsyncResource.bind (static) goes through the same bind')

  const boom = new AsyncResource('x').bind(() => { throw new RangeError('from inside') })
  t.throws(() => boom(), RangeError, 'an error thrown inside reaches the caller')
  t.throws(() => new AsyncResource('x').bind('not a function' as unknown as () => void), { code: 'ERR_INVALID_ARG_TYPE' }, 'a non-function is refused as Node refuses it')

  t.same(hookTrace((r, fn) => r.bind(fn)), stockTrace, 'async_hooks see the same before/after around the call')
  t.same(stockTrace, ['before', 'inside the resource', 'after', 'returned 1'])
})

t.test('node:http2 requests made before the session connects still go out (its pending-request path binds)', async t => {
  useLeanAsyncBind()
  const server = createServer()
  server.on('stream', (stream, headers) => { stream.respond({ ':status': 200 }); stream.end(String(headers[':path'])) })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  t.teardown(() => { session.destroy() })
  t.ok(session.connecting, 'requests queued while connecting')
  const bodies = await Promise.all(['/a', '/b', '/c'].map(async path => await new Promise<string>((resolve, reject) => {
    const req = session.request({ ':path': path }, { endStream: true })
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => { resolve(body) })
    req.on('error', reject)
  })))
  t.same(bodies, ['/a', '/b', '/c'])
})
