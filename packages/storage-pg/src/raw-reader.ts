import type { RawStorageReader, SpendStorage } from '@spendguard/core/storage';
import { int8AsNumber } from './int8-types.js';
import { quoteIdent } from './migrations.js';
import { internalsOf, PgStorage } from './pg-storage.js';

/**
 * Reads what a `PgStorage` really wrote, with plain SQL on its tables and none of its methods, for
 * core's conformance suite (`runStorageConformance({ raw: pgRawReader })`).
 */
export function pgRawReader(storage: SpendStorage): RawStorageReader {
  if (!(storage instanceof PgStorage)) throw new Error('pgRawReader: not a PgStorage');
  const query = async (text: string, values: unknown[] = []) => {
    const { pool, schema } = internalsOf(storage);
    const res = await pool.query({
      text: text.replaceAll('$schema', quoteIdent(schema)),
      values,
      types: int8AsNumber,
    });
    return res.rows as Record<string, unknown>[];
  };
  return {
    async budgetCounter(scope) {
      const [row] = await query(
        'SELECT spend_nano, reserved_nano FROM $schema.budgets WHERE scope_kind = $1 AND scope_id = $2',
        [scope.kind, scope.id],
      );
      return row ? { spendNano: row.spend_nano as number, reservedNano: row.reserved_nano as number } : null;
    },
    async spendLogCount() {
      const [row] = await query('SELECT count(*) AS n FROM $schema.spend_logs');
      return row?.n as number;
    },
    async openReservations() {
      const [row] = await query('SELECT count(*) AS n FROM $schema.reservations');
      return row?.n as number;
    },
    async rateCounter(bucket) {
      const [row] = await query(
        'SELECT used FROM $schema.rate_windows WHERE scope_kind = $1 AND scope_id = $2 AND metric = $3 AND model = $4',
        [bucket.scope.kind, bucket.scope.id, bucket.metric, bucket.model],
      );
      return row ? (row.used as number) : null;
    },
    async rateLeases() {
      const [row] = await query('SELECT count(*) AS n FROM $schema.rate_leases');
      return row?.n as number;
    },
    async dashboardSessions() {
      const [row] = await query('SELECT count(*) AS n FROM $schema.dashboard_sessions');
      return Number(row?.n);
    },
    async dumpText() {
      const { schema } = internalsOf(storage);
      const tables = await query(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
        [schema],
      );
      const dumps = await Promise.all(
        tables.map(({ name }) =>
          query(`SELECT row_to_json(t)::text AS row FROM $schema.${quoteIdent(String(name))} t`),
        ),
      );
      return dumps
        .flat()
        .map((r) => r.row)
        .join('\n');
    },
  };
}
