import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import * as grpc from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import type { Pki, SvidFiles, Tap } from './mesh.ts'

// A real gRPC app (grpc-js, plaintext h2c: what the sidecar talks to on localhost) serving
// echo.proto, and an Echo client that presents an SVID to a sidecar. The app records each call's
// path and metadata; response metadata (x-app-initial, x-app-trailer, x-echo-* copied back as
// trailers) lets a test check that metadata crosses the sidecar both ways.

export interface EchoMessage { text: string, n: number }
export type EchoMethod = 'Unary' | 'ServerStream' | 'ClientStream' | 'Bidi'

// defaults: an n of 0 decodes as 0, not as a missing field.
const definition = loadSync(join(import.meta.dirname, 'echo.proto'), { keepCase: true, defaults: true })
const Echo = (grpc.loadPackageDefinition(definition) as unknown as { gatehouse: { test: { Echo: grpc.ServiceClientConstructor } } }).gatehouse.test.Echo

export interface GrpcAppOptions {
  /** Milliseconds a method waits before answering (a deadline shorter than this expires first). */
  delayMs?: Partial<Record<EchoMethod, number>>
  /** A method that answers with this status (and its trailers) instead of messages. */
  fail?: Partial<Record<EchoMethod, { code: grpc.status, details?: string }>>
}

export interface GrpcCall { path: string, metadata: grpc.Metadata }
export interface GrpcApp { port: number, calls: GrpcCall[], stop: () => void }

export async function startGrpcApp (t: Tap, opts: GrpcAppOptions = {}): Promise<GrpcApp> {
  const calls: GrpcCall[] = []
  // Record, wait, send initial metadata; the trailers to end with, or the error to end with instead.
  const begin = async (method: EchoMethod, call: { getPath: () => string, metadata: grpc.Metadata, sendMetadata: (m: grpc.Metadata) => void }): Promise<{ trailers: grpc.Metadata, error?: Partial<grpc.StatusObject> }> => {
    calls.push({ path: call.getPath(), metadata: call.metadata.clone() })
    if (opts.delayMs?.[method] !== undefined) await sleep(opts.delayMs[method])
    const trailers = new grpc.Metadata()
    trailers.set('x-app-trailer', method)
    for (const [k, v] of Object.entries(call.metadata.getMap())) if (k.startsWith('x-echo-')) trailers.set(k, v)
    const fail = opts.fail?.[method]
    if (fail !== undefined) return { trailers, error: { code: fail.code, details: fail.details ?? `${method} failed`, metadata: trailers } }
    const initial = new grpc.Metadata()
    initial.set('x-app-initial', method)
    call.sendMetadata(initial)
    return { trailers }
  }
  // A call the client cancelled (deadline, app-down tests) breaks off reading its stream: nothing to answer.
  const run = (fn: () => Promise<void>): void => { fn().catch(() => {}) }
  const server = new grpc.Server()
  server.addService(Echo.service, {
    Unary: ((call, cb) => {
      run(async () => { const r = await begin('Unary', call); if (r.error !== undefined) cb(r.error); else cb(null, call.request, r.trailers) })
    }) satisfies grpc.handleUnaryCall<EchoMessage, EchoMessage>,
    ServerStream: ((call) => {
      run(async () => {
        const r = await begin('ServerStream', call)
        if (r.error !== undefined) { call.emit('error', r.error); return }
        for (let i = 0; i < call.request.n; i++) call.write({ text: `${call.request.text}-${i}`, n: i })
        call.end(r.trailers)
      })
    }) satisfies grpc.handleServerStreamingCall<EchoMessage, EchoMessage>,
    ClientStream: ((call, cb) => {
      run(async () => {
        const r = await begin('ClientStream', call)
        const got: EchoMessage[] = []
        for await (const m of call) got.push(m as EchoMessage)
        if (r.error !== undefined) cb(r.error)
        else cb(null, { text: got.map(m => m.text).join(','), n: got.reduce((s, m) => s + m.n, 0) }, r.trailers)
      })
    }) satisfies grpc.handleClientStreamingCall<EchoMessage, EchoMessage>,
    Bidi: ((call) => {
      run(async () => {
        const r = await begin('Bidi', call)
        if (r.error !== undefined) { call.emit('error', r.error); return }
        for await (const m of call) call.write(m)
        call.end(r.trailers)
      })
    }) satisfies grpc.handleBidiStreamingCall<EchoMessage, EchoMessage>
  })
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => { if (err !== null) reject(err); else resolve(p) })
  })
  // forceShutdown, not tryShutdown: a test may leave calls open (a sleeping method, an app-down test).
  const stop = (): void => { server.forceShutdown() }
  t.teardown(stop)
  return { port, calls, stop }
}

export interface CallOptions { metadata?: Record<string, string>, deadlineMs?: number }
/** A finished call: its reply, the initial metadata and the final status (whose metadata is the trailers). */
export interface CallResult<T> { reply: T, headers: grpc.Metadata, status: grpc.StatusObject }

interface EchoStub extends grpc.Client {
  Unary: (req: EchoMessage, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<EchoMessage>) => grpc.ClientUnaryCall
  ServerStream: (req: EchoMessage, md: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientReadableStream<EchoMessage>
  ClientStream: (md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<EchoMessage>) => grpc.ClientWritableStream<EchoMessage>
  Bidi: (md: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientDuplexStream<EchoMessage, EchoMessage>
}

export interface EchoClient {
  stub: EchoStub
  /** Rejects with the grpc.ServiceError (code, details, metadata) of a non-OK status. */
  unary: (req: EchoMessage, o?: CallOptions) => Promise<CallResult<EchoMessage>>
  serverStream: (req: EchoMessage, o?: CallOptions) => Promise<CallResult<EchoMessage[]>>
  clientStream: (reqs: EchoMessage[], o?: CallOptions) => Promise<CallResult<EchoMessage>>
  /** Sends each message only after the previous one came back, so a proxy that buffers whole streams hangs (until the deadline). */
  bidi: (reqs: EchoMessage[], o?: CallOptions) => Promise<CallResult<EchoMessage[]>>
}

/** An Echo client for 127.0.0.1:<port> (or a host:port target) with `creds`, closed in teardown. */
export function echoClient (t: Tap, target: number | string, creds: grpc.ChannelCredentials): EchoClient {
  const stub = new Echo(typeof target === 'number' ? `127.0.0.1:${target}` : target, creds) as unknown as EchoStub
  t.teardown(() => { stub.close() })
  const md = (o: CallOptions): grpc.Metadata => {
    const m = new grpc.Metadata()
    for (const [k, v] of Object.entries(o.metadata ?? {})) m.set(k, v)
    return m
  }
  // A default deadline, so a call the proxy loses fails the test instead of hanging it.
  const callOpts = (o: CallOptions): grpc.CallOptions => ({ deadline: Date.now() + (o.deadlineMs ?? 10_000) })
  // grpc-js emits 'status' last, after the callback or the stream's 'error': settle on it.
  const settle = async <T>(call: grpc.ClientUnaryCall | grpc.ClientReadableStream<EchoMessage> | grpc.ClientWritableStream<EchoMessage> | grpc.ClientDuplexStream<EchoMessage, EchoMessage>, reply: () => T, error: () => grpc.ServiceError | undefined): Promise<CallResult<T>> =>
    await new Promise((resolve, reject) => {
      let headers = new grpc.Metadata()
      call.on('metadata', (m: grpc.Metadata) => { headers = m })
      call.on('status', (status: grpc.StatusObject) => {
        if (status.code === grpc.status.OK) resolve({ reply: reply(), headers, status })
        else reject(error() ?? Object.assign(new Error(`${status.code} ${status.details}`), status))
      })
    })
  // The one reply of a unary or client-streaming call comes to its callback.
  const single = (): { cb: grpc.requestCallback<EchoMessage>, res: () => EchoMessage, err: () => grpc.ServiceError | undefined } => {
    let res: EchoMessage | undefined
    let err: grpc.ServiceError | undefined
    return { cb: (e, r) => { err = e ?? undefined; res = r }, res: () => res!, err: () => err }
  }
  const collect = (call: grpc.ClientReadableStream<EchoMessage> | grpc.ClientDuplexStream<EchoMessage, EchoMessage>): { got: EchoMessage[], err: () => grpc.ServiceError | undefined } => {
    const got: EchoMessage[] = []
    let err: grpc.ServiceError | undefined
    call.on('data', (m: EchoMessage) => got.push(m))
    call.on('error', (e: grpc.ServiceError) => { err = e })
    return { got, err: () => err }
  }
  return {
    stub,
    unary: async (req, o = {}) => { const s = single(); return await settle(stub.Unary(req, md(o), callOpts(o), s.cb), s.res, s.err) },
    serverStream: async (req, o = {}) => {
      const call = stub.ServerStream(req, md(o), callOpts(o))
      const c = collect(call)
      return await settle(call, () => c.got, c.err)
    },
    clientStream: async (reqs, o = {}) => {
      const s = single()
      const call = stub.ClientStream(md(o), callOpts(o), s.cb)
      call.on('error', () => {}) // a write after the call failed; the callback has the error
      for (const r of reqs) call.write(r)
      call.end()
      return await settle(call, s.res, s.err)
    },
    bidi: async (reqs, o = {}) => {
      const call = stub.Bidi(md(o), callOpts(o))
      const c = collect(call)
      let i = 0
      const next = (): void => { if (i < reqs.length) call.write(reqs[i++]!); else call.end() }
      call.on('data', next)
      next()
      return await settle(call, () => c.got, c.err)
    }
  }
}

/** An Echo client presenting `svid` to a sidecar on `port`. The sidecar's SVID has only a SPIFFE URI SAN, no DNS name. */
export function grpcClient (t: Tap, port: number, svid: SvidFiles, pki: Pki): EchoClient {
  const creds = grpc.credentials.createSsl(Buffer.from(pki.ca.bundlePem), Buffer.from(svid.keyPem), Buffer.from(svid.chainPem), { checkServerIdentity: () => undefined })
  return echoClient(t, port, creds)
}
