// One example app in its own process, for the benchmark: guarded or not, on the given provider.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExampleApp } from '../examples/express/src/app.js';

const unguarded = process.env.BENCH_UNGUARDED === '1';
if (!unguarded && !process.env.SPENDGUARD_DB) {
  process.env.SPENDGUARD_DB = join(mkdtempSync(join(tmpdir(), 'spendguard-bench-')), 'bench.db');
}
const { app } = createExampleApp({
  providerBaseUrl: process.env.LLM_BASE_URL!,
  masterKey: 'sk-bench-master',
  unguarded,
});
const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const address = server.address();
  process.send?.({ port: typeof address === 'object' && address ? address.port : 0 });
});
process.on('message', (m) => {
  if (m === 'rss') process.send?.({ rss: process.memoryUsage().rss });
});
