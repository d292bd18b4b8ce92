/**
 * `pnpm export:spend`: every spend log of a date range, as JSON Lines or CSV, to stdout (or a file),
 * streamed a page at a time, straight from the store (the management route `/spend/logs/export`
 * answers the same bytes over HTTP).
 *
 *   pnpm export:spend --from 2026-11-01 --to 2026-11-30 [--format jsonl|csv] [--out FILE]
 *                     [--db ./spendguard.db | --database-url postgres://... [--schema public]]
 *
 * Without --db or --database-url: DATABASE_URL if set, else SPENDGUARD_DB, else ./spendguard.db.
 */
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { exportSpendLogs } from '@spendguard/core';
import { pgStorage } from '@spendguard/storage-pg';
import { sqliteStorage } from '@spendguard/storage-sqlite';

function fail(message: string): never {
  console.error(`export: ${message}`);
  process.exit(2);
}

const USAGE =
  'pnpm export:spend --from YYYY-MM-DD --to YYYY-MM-DD [--format jsonl|csv] [--out FILE] [--db FILE | --database-url URL [--schema S]]';

let values: Record<string, string | boolean | undefined>;
try {
  values = parseArgs({
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      format: { type: 'string' },
      out: { type: 'string' },
      db: { type: 'string' },
      'database-url': { type: 'string' },
      schema: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    args: process.argv.slice(2).filter((a) => a !== '--'),
  }).values;
} catch (error) {
  fail((error as Error).message);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const day = (name: string): string => {
  const v = values[name];
  if (typeof v !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(v) || Number.isNaN(Date.parse(`${v}T00:00:00Z`)))
    fail(`--${name} must be a day, YYYY-MM-DD (${USAGE})`);
  return v;
};
const from = day('from');
const to = day('to');
const format = (values.format ?? 'jsonl') as string;
if (format !== 'jsonl' && format !== 'csv') fail(`--format must be jsonl or csv, got '${format}'`);
if (values.db && values['database-url']) fail('pass --db or --database-url, not both');
const databaseUrl =
  (values['database-url'] as string | undefined) ??
  (values.db ? undefined : process.env.DATABASE_URL || undefined);
const storage = databaseUrl
  ? pgStorage({ connectionString: databaseUrl, schema: values.schema as string | undefined })
  : sqliteStorage({
      path: (values.db as string | undefined) ?? (process.env.SPENDGUARD_DB || './spendguard.db'),
    });
await storage.init();
try {
  const lines = exportSpendLogs(
    storage,
    {
      startTime: new Date(`${from}T00:00:00.000Z`),
      endTime: new Date(Date.parse(`${to}T00:00:00.000Z`) + 86_400_000), // the whole last day
    },
    format,
  );
  await pipeline(Readable.from(lines), values.out ? createWriteStream(values.out as string) : process.stdout);
} finally {
  await storage.close();
}
