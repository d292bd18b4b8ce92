#!/usr/bin/env node
/**
 * Applies spendguard's Postgres migrations, for a deploy step run before the app starts (then create
 * the store with `pgStorage({ migrate: false })`).
 *
 *   DATABASE_URL=postgres://... npx spendguard-pg-migrate [--schema spendguard]
 *
 * The schema may also come from SPENDGUARD_PG_SCHEMA; it defaults to `public`.
 */
import { migratePg } from './migrations.js';

const args = process.argv.slice(2);
const at = args.indexOf('--schema');
const schema = (at >= 0 ? args[at + 1] : undefined) ?? process.env.SPENDGUARD_PG_SCHEMA ?? 'public';
const url = process.env.DATABASE_URL;

if (!url || args.includes('--help') || (at >= 0 && !args[at + 1])) {
  console.error('usage: DATABASE_URL=postgres://user@host:5432/db spendguard-pg-migrate [--schema NAME]');
  process.exit(url ? 0 : 2);
}

try {
  const applied = await migratePg(url, { schema });
  console.log(
    applied.length > 0
      ? `spendguard: applied migration(s) ${applied.join(', ')} to schema '${schema}'`
      : `spendguard: schema '${schema}' is up to date`,
  );
} catch (err) {
  console.error(`spendguard: migration failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
