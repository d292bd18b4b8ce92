import type { RawStorageReader, SpendStorage } from '@spendguard/core/storage';
import { databaseOf, SqliteStorage } from './sqlite-storage.js';

/**
 * Reads what a `SqliteStorage` really wrote, with plain SQL on its tables and none of its methods,
 * for core's conformance suite (`runStorageConformance({ raw: sqliteRawReader })`).
 */
export function sqliteRawReader(storage: SpendStorage): RawStorageReader {
  if (!(storage instanceof SqliteStorage)) throw new Error('sqliteRawReader: not a SqliteStorage');
  const db = () => databaseOf(storage);
  return {
    async budgetCounter(scope) {
      const row = db()
        .prepare('SELECT spend_nano, reserved_nano FROM budgets WHERE scope_kind = ? AND scope_id = ?')
        .get(scope.kind, scope.id) as { spend_nano: number; reserved_nano: number } | undefined;
      return row ? { spendNano: row.spend_nano, reservedNano: row.reserved_nano } : null;
    },
    async spendLogCount() {
      return db().prepare('SELECT count(*) FROM spend_logs').pluck().get() as number;
    },
    async openReservations() {
      return db().prepare('SELECT count(*) FROM reservations').pluck().get() as number;
    },
    async rateCounter(bucket) {
      const used = db()
        .prepare(
          'SELECT used FROM rate_windows WHERE scope_kind = ? AND scope_id = ? AND metric = ? AND model = ?',
        )
        .pluck()
        .get(bucket.scope.kind, bucket.scope.id, bucket.metric, bucket.model) as number | undefined;
      return used ?? null;
    },
    async rateLeases() {
      return db().prepare('SELECT count(*) FROM rate_leases').pluck().get() as number;
    },
    async dashboardSessions() {
      return db().prepare('SELECT count(*) FROM dashboard_sessions').pluck().get() as number;
    },
    async dumpText() {
      const tables = db()
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .pluck()
        .all() as string[];
      return JSON.stringify(tables.map((t) => db().prepare(`SELECT * FROM "${t}"`).all()));
    },
  };
}
