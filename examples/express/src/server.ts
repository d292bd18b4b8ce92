/** The Express demo server; its environment variables are listed in ./demo-environment.ts. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createExampleApp } from './app.js';
import { demoEnvironment } from './demo-environment.js';

const env = await demoEnvironment();
const { app, guard } = createExampleApp({
  providerBaseUrl: env.providerBaseUrl,
  masterKey: env.masterKey,
  storage: env.storage,
  guardOptions: env.guardOptions,
});
await env.connect(guard);

const server = createServer(app);
server.once('error', (error: NodeJS.ErrnoException) => env.listenFailed(error));
server.listen({ port: env.port, host: env.host }, () => {
  env.announce((server.address() as AddressInfo).port);
});

// Stop taking requests, write the settlements still pending (guard.close() flushes them), then exit.
async function shutdown() {
  server.close();
  await guard?.close();
  await env.simulator?.close();
  process.exit(0);
}
process.once('SIGINT', () => void shutdown());
process.once('SIGTERM', () => void shutdown());
