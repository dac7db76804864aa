import t, { type Test } from 'tap'
import { createServer, connect, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { H1Response } from '../src/proxy/h1-server-response.ts'

// How an answer leaves for an HTTP/1.1 caller: the head and the body read in the same turn of the
// event loop go out in one write (one TLS record on a TLS socket), even when the body comes a tick
// after the head, as an HTTP/2 stream's DATA does after its 'response' (the two-hop A side).

interface Spied { socket: Socket, writes: number[], received: () => string }

/** A connected socket whose underlying writes are counted (chunks per write), and what its peer got. */
async function spiedSocket (t: Test): Promise<Spied> {
  let got = ''
  const server = createServer(s => { s.setEncoding('latin1'); s.on('data', (d: string) => { got += d }) })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const socket = connect((server.address() as AddressInfo).port, '127.0.0.1')
  await new Promise(resolve => socket.once('connect', resolve))
  t.teardown(() => { socket.destroy(); server.close() })
  const writes: number[] = []
  const s = socket as unknown as { _write: (...a: unknown[]) => void, _writev: (chunks: unknown[], cb: unknown) => void }
  const write = s._write.bind(socket)
  const writev = s._writev.bind(socket)
  s._write = (...a) => { writes.push(1); write(...a) }
  s._writev = (chunks, cb) => { writes.push(chunks.length); writev(chunks, cb) }
  return { socket, writes, received: () => got }
}

const framing = { keepAliveSeconds: undefined, done: () => {} }
const turn = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

t.test('a body that comes a tick after the head leaves in the head\'s write', async t => {
  const { socket, writes, received } = await spiedSocket(t)
  const res = new H1Response(socket, false, true, false, framing)
  res.head(200, { 'content-length': '5', 'content-type': 'text/plain' }, { end: false, bodyLater: true })
  await new Promise<void>(resolve => process.nextTick(resolve))
  res.write(Buffer.from('hello'))
  res.end()
  await turn()
  t.same(writes, [2], 'one write of two chunks: head and body')
  await new Promise(resolve => setTimeout(resolve, 50))
  t.match(received(), /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello$/)
})

t.test('a head with nothing after it still goes out at the end of the turn', async t => {
  const { socket, writes } = await spiedSocket(t)
  const res = new H1Response(socket, false, true, false, framing)
  res.head(200, { 'content-type': 'text/event-stream' }, { end: false, bodyLater: true })
  await turn()
  t.same(writes, [1], 'written without waiting for a body (a stream that answers later still gets its head)')
  res.write(Buffer.from('data: 1\n\n'))
  await turn()
  t.equal(writes.length, 2, 'a later chunk is its own write')
})

t.test('an answer complete in one tick (the HTTP/1.1 app side) is one write, at the next tick as before', async t => {
  const { socket, writes } = await spiedSocket(t)
  const res = new H1Response(socket, false, true, false, framing)
  res.head(404, { 'content-length': '2' }, { end: false })
  res.write(Buffer.from('no'))
  res.end()
  await new Promise<void>(resolve => process.nextTick(resolve))
  t.same(writes, [2], 'written at the next tick, not held to the end of the turn')
})
