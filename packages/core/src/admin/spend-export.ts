/**
 * Spend logs for a date range as JSON Lines or CSV, streamed page by page (keyset paging, newest
 * first), so an export of millions of rows holds one page in memory. Both read as-is in DuckDB
 * (`read_json_auto`, `read_csv_auto`), pandas or a warehouse loader. Rows are `/spend/logs`' shape.
 */
import type { SpendLogQuery, SpendLogRecord, SpendStorage } from '../storage/storage-contract.js';
import { spendLogJson } from './entity-json.js';

export type SpendExportFormat = 'jsonl' | 'csv';

/** The CSV's columns, in order: `/spend/logs`' fields (lists and objects as JSON text). */
export const SPEND_EXPORT_COLUMNS = [
  'request_id',
  'call_id',
  'call_type',
  'api_key',
  'spend',
  'total_tokens',
  'prompt_tokens',
  'completion_tokens',
  'startTime',
  'endTime',
  'model',
  'custom_llm_provider',
  'user',
  'team_id',
  'end_user',
  'request_tags',
  'status',
  'metadata',
] as const;

/** RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled. */
function csvField(value: unknown): string {
  if (value === null || value === undefined) return '';
  const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function line(log: SpendLogRecord, format: SpendExportFormat): string {
  const row = spendLogJson(log) as Record<string, unknown>;
  if (format === 'jsonl') return `${JSON.stringify(row)}\n`;
  return `${SPEND_EXPORT_COLUMNS.map((c) => csvField(row[c])).join(',')}\r\n`;
}

/**
 * The export's text, a page of logs at a time (`pageSize`, at most 1000, what storage answers at
 * once); `filter` is `querySpendLogs`' without paging.
 */
export async function* spendLogLines(
  storage: Pick<SpendStorage, 'querySpendLogs'>,
  filter: Omit<SpendLogQuery, 'before' | 'limit'>,
  format: SpendExportFormat,
  pageSize = 1000,
): AsyncGenerator<string> {
  if (format === 'csv') yield `${SPEND_EXPORT_COLUMNS.join(',')}\r\n`;
  let before: SpendLogQuery['before'];
  for (;;) {
    const page = await storage.querySpendLogs({ ...filter, before, limit: pageSize });
    if (page.length === 0) return;
    yield page.map((log) => line(log, format)).join('');
    if (page.length < pageSize) return;
    const last = page[page.length - 1]!;
    before = { startTime: last.startTime, requestId: last.requestId };
  }
}

/** The export as a web stream of UTF-8 bytes (what the management route answers). */
export function spendLogStream(lines: AsyncGenerator<string>): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await lines.next();
      if (next.done) controller.close();
      else controller.enqueue(encoder.encode(next.value));
    },
    async cancel() {
      await lines.return(undefined);
    },
  });
}
