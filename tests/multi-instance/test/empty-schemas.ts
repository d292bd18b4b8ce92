import { randomBytes } from 'node:crypto';
import { migratePg } from '@spendguard/storage-pg';
import type pg from 'pg';

/**
 * Migrated Postgres schemas reused from test to test within one test file, for tests that need an empty
 * store rather than a new schema: migrating a schema and dropping it costs about as much as a short
 * test. `take()` hands out a schema emptied after an earlier test (every table's rows deleted but the
 * migration log's, every sequence restarted), else a new name that the store's `init()` migrates;
 * `giveBack()` after the test empties it for the next one. A schema whose structure the test changed
 * (a trigger or function of its own, a table more or less, a migration missing) is dropped instead.
 */
export class EmptySchemas {
  readonly #pool: pg.Pool;
  readonly #prefix: string;
  readonly #spare: string[] = [];
  readonly #all = new Set<string>();
  #migrated: Promise<string> | undefined;

  constructor(pool: pg.Pool, prefix = 'sg_test_') {
    this.#pool = pool;
    this.#prefix = prefix;
  }

  /** A schema name: an emptied one of this file, else a new one. */
  take(): string {
    const name = this.#spare.pop() ?? `${this.#prefix}${randomBytes(6).toString('hex')}`;
    this.#all.add(name);
    return name;
  }

  /** After the test (every store on it closed): empties `name` for the next test, or drops it. */
  async giveBack(name: string): Promise<void> {
    if ((await this.#structure(name)) === (await this.#migratedStructure())) {
      await this.#pool.query(EMPTY_SCHEMA.replaceAll('%L', `'${name.replaceAll("'", "''")}'`));
      this.#spare.push(name);
    } else {
      await this.#drop(name);
    }
  }

  /** Drops every schema this has handed out (in `afterAll`). */
  async dropAll(): Promise<void> {
    this.#spare.length = 0;
    for (const name of this.#all) await this.#drop(name);
  }

  async #drop(name: string): Promise<void> {
    this.#all.delete(name);
    await this.#pool.query(`DROP SCHEMA IF EXISTS "${name.replaceAll('"', '""')}" CASCADE`);
  }

  /** What of a schema's structure a test could change: its relations, functions, triggers, migrations. */
  async #structure(schema: string): Promise<string> {
    const { rows } = await this.#pool.query(
      `SELECT (SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname) FROM pg_class
                WHERE relnamespace = to_regnamespace($1)) AS relations,
              (SELECT string_agg(f, ',' ORDER BY f) FROM (
                SELECT proname || '(' || pg_get_function_identity_arguments(oid) || ')' AS f FROM pg_proc
                WHERE pronamespace = to_regnamespace($1)) AS p) AS functions,
              (SELECT string_agg(relname || '.' || tgname, ',' ORDER BY relname, tgname) FROM pg_trigger t
                JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = to_regnamespace($1)) AS triggers`,
      [schema],
    );
    const versions = rows[0].relations?.includes('spendguard_migrations:r')
      ? (
          await this.#pool.query(
            `SELECT string_agg(version::text, ',' ORDER BY version) AS v FROM "${schema.replaceAll('"', '""')}".spendguard_migrations`,
          )
        ).rows[0].v
      : null;
    return JSON.stringify({ ...rows[0], versions });
  }

  /** The structure of a schema just migrated, to compare a used one against (read once). */
  #migratedStructure(): Promise<string> {
    this.#migrated ??= (async () => {
      const name = `${this.#prefix}${randomBytes(6).toString('hex')}`;
      try {
        await migratePg(this.#pool, { schema: name });
        return await this.#structure(name);
      } finally {
        await this.#pool.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
      }
    })();
    return this.#migrated;
  }
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
