import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach } from 'vitest';
import { EmptySchemas } from '../../../tests/multi-instance/test/empty-schemas.js';
import { sharedPostgres } from '../../../tests/multi-instance/test/postgres.js';
import { type PgStorage, pgStorage } from '../src/index.js';

/**
 * The storage-pg tests' Postgres: `DATABASE_URL` or the local server, else a throwaway one (never in CI,
 * where a missing server fails: CI must not pass by testing nothing); an admin pool, and a schema of its
 * own for each test: `freshSchema()`, a new name dropped after the test, or `emptySchema()`, a schema
 * migrated earlier in this file and emptied after the test that used it (cheaper than migrating anew).
 */
const server = await sharedPostgres();
export const url = server.url;
export const admin = new pg.Pool({ connectionString: url, max: 4 });

const schemas: string[] = [];
/** Migrated schemas handed out by `emptySchema()` in this test. */
const lent: string[] = [];
const empty = new EmptySchemas(admin);
const stores: PgStorage[] = [];
const schemaOf = new WeakMap<PgStorage, string>();

/** A new schema name, dropped after the test. */
export function freshSchema(): string {
  const name = `sg_test_${randomBytes(6).toString('hex')}`;
  schemas.push(name);
  return name;
}

/**
 * A migrated schema with no rows (but its migration log), for a test that needs an empty store, not a
 * new schema: one emptied after an earlier test of this file when there is one, else a new one that
 * `open()` migrates (`EmptySchemas`).
 */
export function emptySchema(): string {
  const name = empty.take();
  lent.push(name);
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
  for (const name of lent.splice(0)) await empty.giveBack(name);
});
afterAll(async () => {
  await empty.dropAll();
  await admin.end();
  await server.close();
});
