// One example app in its own process, for the benchmark: guarded or not, on the given provider, on
// Postgres when DATABASE_URL is set (several of these share it), else on its own SQLite file.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { pgStorage } from '@spendguard/storage-pg';
import { createExampleApp } from '../examples/express/src/app.js';
import { createExampleApp as createHonoExampleApp } from '../examples/hono/src/app.js';

const unguarded = process.env.BENCH_UNGUARDED === '1';
const databaseUrl = process.env.DATABASE_URL || undefined;
if (!unguarded && !databaseUrl && !process.env.SPENDGUARD_DB) {
  process.env.SPENDGUARD_DB = join(mkdtempSync(join(tmpdir(), 'spendguard-bench-')), 'bench.db');
}
const options = {
  providerBaseUrl: process.env.LLM_BASE_URL!,
  masterKey: 'sk-bench-master',
  storage: databaseUrl ? pgStorage({ connectionString: databaseUrl }) : undefined,
  unguarded,
};
const ready = (port: number) => process.send?.({ port });
if (process.env.BENCH_FRAMEWORK === 'hono') {
  const { app, guard } = createHonoExampleApp(options);
  await guard?.storage(); // connected and migrated before the first measured request
  serve({ fetch: app.fetch, port: Number(process.env.PORT ?? 0), hostname: '127.0.0.1' }, (info) =>
    ready(info.port),
  );
} else {
  const { app, guard } = createExampleApp(options);
  await guard?.storage();
  const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
    const address = server.address();
    ready(typeof address === 'object' && address ? address.port : 0);
  });
}
process.on('message', (m) => {
  if (m === 'rss') process.send?.({ rss: process.memoryUsage().rss });
});
// A clean exit on Ctrl-C, so that `node --cpu-prof` writes the server's profile.
process.once('SIGINT', () => process.exit(0));
