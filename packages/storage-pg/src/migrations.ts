import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';

/**
 * Versioned schema migrations, shipped as SQL files in the package's `migrations/` folder
 * (`0001_init.sql`, ...) and read relative to this module, which sits one folder below the package
 * root both as `src/migrations.ts` and bundled into `dist/*.js`. A released file is never edited:
 * change the schema by adding the next number. In the files, `@schema@` stands for the target schema.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const MIGRATIONS_DIR = new URL('../migrations/', import.meta.url);
const FILE_RE = /^(\d+)_([\w-]+)\.sql$/;

let loaded: readonly Migration[] | undefined;

/** Every migration file of this package, in version order (read once). */
export function loadMigrations(): readonly Migration[] {
  loaded ??= readdirSync(MIGRATIONS_DIR)
    .flatMap((file) => {
      const match = FILE_RE.exec(file);
      if (!match) return [];
      const sql = readFileSync(new URL(file, MIGRATIONS_DIR), 'utf8');
      return [{ version: Number(match[1]), name: match[2] ?? file, sql }];
    })
    .sort((a, b) => a.version - b.version);
  return loaded;
}

/** The `schema` option as an SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export interface MigrateOptions {
  /**
   * The Postgres schema that holds spendguard's tables; created if missing.
   * @default 'public'
   * @example migratePg(pool, { schema: 'spendguard' })
   */
  schema?: string;
}

/**
 * Applies every migration this database schema has not seen, for teams that migrate in a deploy step
 * rather than when the app starts (then pass `migrate: false` to `pgStorage`). Returns the versions
 * it applied.
 *
 * One transaction under `pg_advisory_xact_lock`: instances starting at the same moment queue on the
 * lock, and each later one finds the versions recorded in `spendguard_migrations` and applies nothing.
 * @example
 * await migratePg(process.env.DATABASE_URL!);
 */
export async function migratePg(target: string | pg.Pool, options: MigrateOptions = {}): Promise<number[]> {
  const pool = typeof target === 'string' ? new pg.Pool({ connectionString: target, max: 1 }) : target;
  try {
    return await applyMigrations(pool, options.schema ?? 'public');
  } finally {
    if (pool !== target) await pool.end();
  }
}

export async function applyMigrations(
  pool: pg.Pool,
  schema: string,
  migrations: readonly Migration[] = loadMigrations(),
): Promise<number[]> {
  const q = quoteIdent(schema);
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [
      `spendguard_migrations:${schema}`,
    ]);
    const exists = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
    if (exists.rowCount === 0) await client.query(`CREATE SCHEMA ${q}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${q}.spendguard_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    const applied = new Set(
      (await client.query<{ version: number }>(`SELECT version FROM ${q}.spendguard_migrations`)).rows.map(
        (r) => r.version,
      ),
    );
    const done: number[] = [];
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      // Every name in the files is qualified with `@schema@` (see migrations/0001_init.sql).
      await client.query(m.sql.replaceAll('@schema@', q));
      await client.query(`INSERT INTO ${q}.spendguard_migrations (version, name) VALUES ($1, $2)`, [
        m.version,
        m.name,
      ]);
      done.push(m.version);
    }
    await client.query('COMMIT');
    return done;
  } catch (err) {
    // A connection that cannot even roll back is discarded rather than returned to the pool.
    await client.query('ROLLBACK').catch((e: Error) => {
      broken = e;
    });
    throw err;
  } finally {
    client.release(broken);
  }
}

/** Throws, saying how to fix it, when `schema` lacks a migration this package ships. */
export async function assertMigrated(pool: pg.Pool, schema: string): Promise<void> {
  let versions: number[] = [];
  try {
    const res = await pool.query<{ version: number }>(
      `SELECT version FROM ${quoteIdent(schema)}.spendguard_migrations`,
    );
    versions = res.rows.map((r) => r.version);
  } catch (err) {
    // undefined_table / invalid_schema_name: never migrated; anything else is a real failure.
    const code = (err as { code?: unknown }).code;
    if (code !== '42P01' && code !== '3F000') throw err;
  }
  const missing = loadMigrations().filter((m) => !versions.includes(m.version));
  if (missing.length > 0) {
    throw new Error(
      `pgStorage: schema '${schema}' lacks migration(s) ${missing.map((m) => `${m.version}_${m.name}`).join(', ')}. ` +
        'Run `DATABASE_URL=... npx spendguard-pg-migrate` (or `await migratePg(...)`) first, or drop `migrate: false`.',
    );
  }
}
