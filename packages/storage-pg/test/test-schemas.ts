import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach } from 'vitest';
import { sharedPostgres } from '../../../tests/multi-instance/test/postgres.js';
import { type PgStorage, pgStorage } from '../src/index.js';
import { applyMigrations } from '../src/migrations.js';

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
/** Migrated schemas handed out by `emptySchema()` in this test, and those emptied for the next tests. */
const lent: string[] = [];
const spare: string[] = [];
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
 * new schema: one emptied after an earlier test of this file when there is one (every table's rows
 * deleted, every sequence restarted), else a new one that `open()` migrates. A test that changed more
 * than rows (a trigger or function of its own, another table) gets its schema dropped, not reused.
 */
export function emptySchema(): string {
  const name = spare.pop() ?? `sg_test_${randomBytes(6).toString('hex')}`;
  lent.push(name);
  return name;
}

/** What of a schema's structure a test could change: its relations, functions and triggers. */
async function structure(schema: string): Promise<string> {
  const { rows } = await admin.query(
    `SELECT (SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname) FROM pg_class
              WHERE relnamespace = $1::regnamespace) AS relations,
            (SELECT string_agg(f, ',' ORDER BY f) FROM (
              SELECT proname || '(' || pg_get_function_identity_arguments(oid) || ')' AS f FROM pg_proc
              WHERE pronamespace = $1::regnamespace) AS p) AS functions,
            (SELECT string_agg(relname || '.' || tgname, ',' ORDER BY relname, tgname) FROM pg_trigger t
              JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = $1::regnamespace) AS triggers`,
    [schema],
  );
  return JSON.stringify(rows[0]);
}

/**
 * Deletes every row but the migration log's and restarts every sequence, in one statement. The tables
 * reference each other, and deleting a daily rollup's rows writes its narrow rollups (a trigger): the
 * deletes go round until every table is empty.
 */
const EMPTY_SCHEMA = `
DO $$
DECLARE
  tables regclass[] := ARRAY(SELECT c.oid::regclass FROM pg_class c
    WHERE c.relnamespace = %L::regnamespace AND c.relkind IN ('r', 'p') AND c.relname <> 'spendguard_migrations');
  t regclass;
  s regclass;
  rows_left boolean;
BEGIN
  FOR pass IN 1..20 LOOP
    FOREACH t IN ARRAY tables LOOP
      BEGIN
        EXECUTE format('DELETE FROM %s', t);
      EXCEPTION WHEN foreign_key_violation THEN
        NULL; -- still referenced: emptied on a later pass
      END;
    END LOOP;
    rows_left := false;
    FOREACH t IN ARRAY tables LOOP
      EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', t) INTO rows_left;
      EXIT WHEN rows_left;
    END LOOP;
    EXIT WHEN NOT rows_left;
  END LOOP;
  IF rows_left THEN RAISE EXCEPTION 'rows left after 20 passes'; END IF;
  FOR s IN SELECT c.oid::regclass FROM pg_class c WHERE c.relnamespace = %L::regnamespace AND c.relkind = 'S' LOOP
    PERFORM setval(s, 1, false);
  END LOOP;
END $$`;

/** The structure of a schema just migrated, to compare a used one against (read once, lazily). */
let migrated: Promise<string> | undefined;
function migratedStructure(): Promise<string> {
  migrated ??= (async () => {
    const name = `sg_test_${randomBytes(6).toString('hex')}`;
    try {
      await applyMigrations(admin, name);
      return await structure(name);
    } finally {
      await admin.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
    }
  })();
  return migrated;
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
  for (const name of lent.splice(0)) {
    if ((await structure(name)) === (await migratedStructure())) {
      await admin.query(EMPTY_SCHEMA.replaceAll('%L', `'${name}'`));
      spare.push(name);
    } else {
      await admin.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
    }
  }
});
afterAll(async () => {
  for (const name of spare.splice(0)) await admin.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
  await admin.end();
  await server.close();
});
