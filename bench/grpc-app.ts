// The gRPC app behind the gRPC targets of bench/run.ts: a real @grpc/grpc-js server over plaintext
// h2c (what a sidecar talks to on localhost), serving gatehouse.test.Echo/Unary from test/helpers/echo.proto (the tests' proto; only Unary is served),
// which answers with the request (decoded and encoded again by protobufjs, as any grpc-js app does).
//   node bench/grpc-app.ts [PORT]
// Prints {"port":N} on stdout once listening.
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'

interface EchoMessage { text: string, n: number }
const definition = loadSync(join(import.meta.dirname, '../test/helpers/echo.proto'), { keepCase: true, defaults: true })
const Echo = (grpc.loadPackageDefinition(definition) as unknown as { gatehouse: { test: { Echo: grpc.ServiceClientConstructor } } }).gatehouse.test.Echo

const server = new grpc.Server()
server.addService(Echo.service, {
  Unary: ((call, cb) => { cb(null, call.request) }) satisfies grpc.handleUnaryCall<EchoMessage, EchoMessage>
})
server.bindAsync(`127.0.0.1:${Number(process.argv[2] ?? 0)}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err !== null) throw err
  process.stdout.write(`${JSON.stringify({ port })}\n`)
})
process.on('SIGTERM', () => { server.forceShutdown() })
