/**
 * `pnpm seed`: fills a SQLite file or a Postgres database with the seed's data set.
 *
 *   pnpm seed [--calls 1000000] [--days 90] [--seed 1] [--end 2026-11-01T00:00:00Z]
 *             [--db ./spendguard.db | --database-url postgres://... [--schema public]] [--replace]
 *
 * Without --db or --database-url: DATABASE_URL if set, else SPENDGUARD_DB, else ./spendguard.db (as the
 * demo). A store already seeded with the same options is reused; one holding other data is refused
 * unless --replace.
 */
import { parseArgs } from 'node:util';
import { seedPg } from './seed-pg.js';
import { seedSqlite } from './seed-sqlite.js';

function fail(message: string): never {
  console.error(message.startsWith('seed: ') ? message : `seed: ${message}`);
  process.exit(2);
}

function parse() {
  try {
    return parseArgs({
      options: {
        calls: { type: 'string' },
        days: { type: 'string' },
        seed: { type: 'string' },
        end: { type: 'string' },
        db: { type: 'string' },
        'database-url': { type: 'string' },
        schema: { type: 'string' },
        replace: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      // `pnpm seed -- --calls 10` passes the `--` through.
      args: process.argv.slice(2).filter((a) => a !== '--'),
    });
  } catch (error) {
    return fail((error as Error).message);
  }
}
const { values } = parse();
if (values.help) {
  console.log(
    'pnpm seed [--calls N] [--days N] [--seed N] [--end ISO] [--db FILE | --database-url URL [--schema S]] [--replace]',
  );
  process.exit(0);
}
const whole = (name: string, value: string | undefined) => {
  if (value === undefined) return undefined;
  const n = Number(value.replaceAll('_', ''));
  if (!Number.isSafeInteger(n)) fail(`--${name} must be a whole number, got '${value}'`);
  return n;
};
const end = values.end === undefined ? undefined : new Date(values.end);
if (end && Number.isNaN(end.getTime()))
  fail(`--end must be a date, e.g. 2026-11-01T00:00:00Z, got '${values.end}'`);
if (values.db && values['database-url']) fail('pass --db or --database-url, not both');
const options = {
  calls: whole('calls', values.calls),
  days: whole('days', values.days),
  seed: whole('seed', values.seed),
  end,
};
const databaseUrl = values['database-url'] ?? (values.db ? undefined : process.env.DATABASE_URL || undefined);
const target = databaseUrl
  ? `${new URL(databaseUrl).host}${new URL(databaseUrl).pathname} (Postgres, schema ${values.schema ?? 'public'})`
  : `${values.db ?? (process.env.SPENDGUARD_DB || './spendguard.db')} (SQLite)`;
console.log(`seed: ${options.calls ?? 1_000_000} calls over ${options.days ?? 90} days into ${target}`);
try {
  const result = databaseUrl
    ? await seedPg({ connectionString: databaseUrl, schema: values.schema }, options, {
        ifNotEmpty: values.replace ? 'replace' : 'throw',
      })
    : await seedSqlite(values.db ?? (process.env.SPENDGUARD_DB || './spendguard.db'), options, {
        ifNotEmpty: values.replace ? 'replace' : 'throw',
      });
  console.log(
    result.reused
      ? `seed: already seeded with these options (fingerprint ${result.fingerprint}); nothing written`
      : `seed: ${result.calls} calls written in ${(result.ms / 1000).toFixed(1)} s (fingerprint ${result.fingerprint})`,
  );
} catch (error) {
  fail((error as Error).message);
}
