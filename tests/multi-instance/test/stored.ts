/**
 * What the instances really stored, read with plain SQL (Postgres) or the SQLite store's raw reader,
 * none of it through the instances themselves.
 */
import { createRequire } from 'node:module';
import { sqliteRawReader, sqliteStorage } from '@spendguard/storage-sqlite';
import pg from 'pg';

export interface StoredLog {
  requestId: string;
  apiKeyHash: string;
  spendNano: number;
  estimated: boolean;
  status: string;
  expired: boolean;
  endUser: string | null;
}

export interface StoredState {
  counters: Record<
    'key' | 'user' | 'team',
    { spendNano: number; reservedNano: number; maxBudgetNano: number | null }
  >;
  /** Every spend log of the key. */
  logs: StoredLog[];
  openReservations: number;
}

type Ids = { token: string; userId: string; teamId: string };

/** Reads the key's, user's and team's counters and the key's spend logs from a Postgres database. */
export async function readPostgres(url: string, ids: Ids): Promise<StoredState> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on('error', () => {});
  await client.connect();
  try {
    const counters = await client.query(
      `SELECT scope_kind, spend_nano::text, reserved_nano::text, max_budget_nano::text FROM budgets
       WHERE (scope_kind, scope_id) IN (('key', $1), ('user', $2), ('team', $3))`,
      [ids.token, ids.userId, ids.teamId],
    );
    const logs = await client.query(
      `SELECT request_id, api_key_hash, spend_nano::text, estimated, status, end_user,
         coalesce((metadata->>'expired_reservation')::boolean, false) AS expired
       FROM spend_logs WHERE api_key_hash = $1`,
      [ids.token],
    );
    const open = await client.query('SELECT count(*)::int AS n FROM reservations');
    const byKind = Object.fromEntries(
      counters.rows.map((r) => [
        r.scope_kind,
        {
          spendNano: Number(r.spend_nano),
          reservedNano: Number(r.reserved_nano),
          maxBudgetNano: r.max_budget_nano === null ? null : Number(r.max_budget_nano),
        },
      ]),
    ) as StoredState['counters'];
    return {
      counters: byKind,
      logs: logs.rows.map((r) => ({
        requestId: r.request_id,
        apiKeyHash: r.api_key_hash,
        spendNano: Number(r.spend_nano),
        estimated: r.estimated,
        status: r.status,
        expired: r.expired,
        endUser: r.end_user,
      })),
      openReservations: open.rows[0].n,
    };
  } finally {
    await client.end().catch(() => {});
  }
}

/** The counters of a SQLite file (its spend logs are read through the management API). */
export async function readSqliteCounters(path: string, ids: Ids): Promise<Omit<StoredState, 'logs'>> {
  const storage = sqliteStorage({ path });
  await storage.init();
  try {
    const raw = sqliteRawReader(storage);
    const read = async (kind: 'key' | 'user' | 'team', id: string) => {
      const c = await raw.budgetCounter({ kind, id });
      if (!c) throw new Error(`no ${kind} counter ${id}`);
      return { ...c, maxBudgetNano: null };
    };
    return {
      counters: {
        key: await read('key', ids.token),
        user: await read('user', ids.userId),
        team: await read('team', ids.teamId),
      },
      openReservations: await raw.openReservations(),
    };
  } finally {
    await storage.close();
  }
}

/** The request ids of the open reservations of calls attributed to `endUser` (see `endUserOf`). */
export async function openReservationsOf(client: pg.Client, endUser: string): Promise<string[]> {
  const { rows } = await client.query(
    "SELECT pending->>'requestId' AS request_id FROM reservations WHERE pending->>'endUser' = $1",
    [endUser],
  );
  return rows.map((r) => r.request_id);
}

/** A spend log as the crash-recovery test reads it. */
export interface CrashLog {
  spendNano: number;
  /** Charged at its estimate because its process's heartbeat stopped: that process's id. */
  processDied: string | null;
  /** Charged at its estimate, for a dead process or its TTL. */
  expired: boolean;
  endUser: string | null;
}

/** What the crash-recovery test polls, read straight from the store (never through an instance). */
export interface CrashStore {
  /** Open reservations of the calls attributed to `endUser` (see `endUserOf`). */
  openReservationsOf(endUser: string): Promise<number>;
  openReservations(): Promise<number>;
  /** Open escrow leases (reservations named `lease:…`) that `endUser`'s calls opened. */
  openLeasesOf(endUser: string): Promise<number>;
  /** Every spend log of the key, by request id. */
  logsOf(token: string): Promise<Map<string, CrashLog>>;
  /** The key's, user's and team's counters. */
  counters(ids: Ids): Promise<StoredState['counters']>;
  close(): Promise<void>;
}

interface SqliteHandle {
  prepare(sql: string): { all(...params: unknown[]): any[]; get(...params: unknown[]): any };
  pragma(sql: string): unknown;
  close(): void;
}

/** Reads a SQLite file with its own connection (WAL: it never blocks the instances' writes). */
export function sqliteCrashStore(path: string): CrashStore {
  const require = createRequire(import.meta.resolve('@spendguard/storage-sqlite'));
  const Database = require('better-sqlite3') as new (file: string) => SqliteHandle;
  const db = new Database(path);
  db.pragma('busy_timeout = 5000');
  return {
    async openReservationsOf(endUser) {
      return db.prepare('SELECT count(*) AS n FROM reservations WHERE end_user = ?').get(endUser).n;
    },
    async openReservations() {
      return db.prepare('SELECT count(*) AS n FROM reservations').get().n;
    },
    async openLeasesOf(endUser) {
      return db
        .prepare("SELECT count(*) AS n FROM reservations WHERE end_user = ? AND id LIKE 'lease:%'")
        .get(endUser).n;
    },
    async logsOf(token) {
      const rows = db
        .prepare('SELECT request_id, spend_nano, metadata, end_user FROM spend_logs WHERE api_key_hash = ?')
        .all(token);
      return new Map(
        rows.map((r) => {
          const metadata = JSON.parse(r.metadata);
          return [
            r.request_id,
            {
              spendNano: r.spend_nano,
              processDied: metadata.process_died ?? null,
              expired: metadata.expired_reservation === true,
              endUser: r.end_user,
            },
          ];
        }),
      );
    },
    async counters(ids) {
      const read = (kind: string, id: string) => {
        const r = db
          .prepare(
            'SELECT spend_nano, reserved_nano, max_budget_nano FROM budgets WHERE scope_kind = ? AND scope_id = ?',
          )
          .get(kind, id);
        return { spendNano: r.spend_nano, reservedNano: r.reserved_nano, maxBudgetNano: r.max_budget_nano };
      };
      return { key: read('key', ids.token), user: read('user', ids.userId), team: read('team', ids.teamId) };
    },
    async close() {
      db.close();
    },
  };
}

/** The same reads on a Postgres database. */
export async function postgresCrashStore(url: string): Promise<CrashStore> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on('error', () => {});
  await client.connect();
  return {
    async openReservationsOf(endUser) {
      return (await openReservationsOf(client, endUser)).length;
    },
    async openReservations() {
      return (await client.query('SELECT count(*)::int AS n FROM reservations')).rows[0].n;
    },
    async openLeasesOf(endUser) {
      const { rows } = await client.query(
        "SELECT count(*)::int AS n FROM reservations WHERE pending->>'endUser' = $1 AND id LIKE 'lease:%'",
        [endUser],
      );
      return rows[0].n;
    },
    async logsOf(token) {
      const { rows } = await client.query(
        'SELECT request_id, spend_nano::text, metadata, end_user FROM spend_logs WHERE api_key_hash = $1',
        [token],
      );
      return new Map(
        rows.map((r) => [
          r.request_id,
          {
            spendNano: Number(r.spend_nano),
            processDied: r.metadata?.process_died ?? null,
            expired: r.metadata?.expired_reservation === true,
            endUser: r.end_user,
          },
        ]),
      );
    },
    async counters(ids) {
      return (await readPostgres(url, ids)).counters;
    },
    async close() {
      await client.end().catch(() => {});
    },
  };
}
