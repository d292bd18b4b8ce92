import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach } from 'vitest';
import { type PgStorage, pgStorage } from '../src/index.js';

/**
 * The storage-pg tests' Postgres: `DATABASE_URL` or the local server, an admin pool, and a schema of
 * its own for each test (`freshSchema()`), dropped after it with every store opened on it. Fails, never
 * skips, without a server: CI must not pass by testing nothing.
 */
export const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const admin = new pg.Pool({ connectionString: url, max: 4 });
await admin.query('SELECT 1').catch((err: Error) => {
  throw new Error(
    `storage-pg tests need Postgres at ${url} (${err.message}). Start it with ` +
      '`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set DATABASE_URL.',
  );
});

const schemas: string[] = [];
const stores: PgStorage[] = [];
const schemaOf = new WeakMap<PgStorage, string>();

/** A new schema name, dropped after the test. */
export function freshSchema(): string {
  const name = `sg_test_${randomBytes(6).toString('hex')}`;
  schemas.push(name);
  return name;
}

/** A store on `schema` (a fresh one by default), through its own pool or the given one; closed after the test. */
export async function open(schema = freshSchema(), pool?: pg.Pool): Promise<PgStorage> {
  const s = pgStorage(pool ? { pool, schema } : { connectionString: url, schema });
  stores.push(s);
  schemaOf.set(s, schema);
  await s.init();
  return s;
}

/** The schema a store of `open()` is on. */
export function schemaOfStore(s: PgStorage): string {
  return schemaOf.get(s) ?? '';
}

afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.close()));
  for (const name of schemas.splice(0)) await admin.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
});
afterAll(() => admin.end());
