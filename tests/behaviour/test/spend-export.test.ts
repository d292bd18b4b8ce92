/**
 * The spend-log export (`GET /spend/logs/export`), read as-is by DuckDB (@duckdb/node-api): its
 * counts and totals match `/spend/logs` and hand-worked costs. gpt-4o: $2.5e-6 a prompt token, $1e-5
 * a completion token, so the three calls below cost 0.0045 + 0.002 + 0.000075 = $0.006575.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { exportSpendLogs } from '@spendguard/core';
import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

const DAY = 86_400_000;
const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

async function duck(sql: string): Promise<Record<string, unknown>[]> {
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  try {
    return (await conn.runAndReadAll(sql)).getRowObjectsJS() as Record<string, unknown>[];
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}

describe.each(ADAPTERS)('spend-log export ($name)', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('JSONL and CSV, read by DuckDB, match /spend/logs', async () => {
    app = await startTestApp(framework);
    const key = (await admin(app, 'POST', '/key/generate', { key_alias: 'exporter' })).body;
    const usages = [
      { prompt_tokens: 1000, completion_tokens: 200 },
      { prompt_tokens: 400, completion_tokens: 100 },
      { prompt_tokens: 10, completion_tokens: 5 },
    ];
    for (const usage of usages) {
      app.simulator.scriptNextUsage(usage);
      const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 300,
          // A value CSV must quote: a comma, double quotes and a line break.
          metadata: { spend_logs_metadata: { note: 'a, "quoted"\nvalue' } },
        }),
      });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    await app.settled();
    const logs = (await admin(app, 'GET', `/spend/logs?api_key=${key.token}`)).body as Array<{
      spend: number;
    }>;
    expect(logs).toHaveLength(3);
    const logged = logs.reduce((s, l) => s + l.spend, 0);
    expect(logged).toBeCloseTo(0.006575, 12);

    const range = `start_date=${day(Date.now() - DAY)}&end_date=${day(Date.now() + DAY)}`;
    const dir = mkdtempSync(join(tmpdir(), 'spendguard-export-'));
    for (const format of ['jsonl', 'csv'] as const) {
      const res = await fetch(`${app.baseUrl}/spend/logs/export?${range}&format=${format}`, {
        headers: { authorization: `Bearer sk-master-test-key` },
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(
        format === 'csv' ? /^text\/csv/ : /^application\/x-ndjson/,
      );
      const path = join(dir, `spend.${format}`);
      writeFileSync(path, Buffer.from(await res.arrayBuffer()));
      const reader =
        format === 'csv' ? `read_csv_auto('${path}', header = true)` : `read_json_auto('${path}')`;
      const [row] = await duck(
        `SELECT count(*) AS n, sum(spend) AS spend, sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
                count(DISTINCT request_id) AS ids, min(api_key) AS key FROM ${reader}`,
      );
      expect(Number(row!.n)).toBe(3);
      expect(Number(row!.ids)).toBe(3);
      expect(row!.spend as number).toBeCloseTo(logged, 12);
      expect(Number(row!.prompt)).toBe(1410);
      expect(Number(row!.completion)).toBe(305);
      expect(row!.key).toBe(key.token);
      const notes = await duck(
        `SELECT DISTINCT json_extract_string(CAST(metadata AS JSON), '$.spend_logs_metadata.note') AS note FROM ${reader}`,
      );
      expect(notes).toEqual([{ note: 'a, "quoted"\nvalue' }]);
    }

    // Paged a page of 2 at a time, the same three rows come out once each.
    const lines: string[] = [];
    for await (const chunk of exportSpendLogs(
      await app.guard.storage(),
      { startTime: new Date(Date.now() - DAY), endTime: new Date(Date.now() + DAY) },
      'jsonl',
      2,
    )) {
      lines.push(...chunk.split('\n').filter(Boolean));
    }
    expect(new Set(lines.map((l) => JSON.parse(l).request_id)).size).toBe(3);
    expect(lines).toHaveLength(3);
  });

  it('is the master key’s only, and refuses what it does not act on', async () => {
    app = await startTestApp(framework);
    const key = (await admin(app, 'POST', '/key/generate', {})).body;
    const path = '/spend/logs/export?start_date=2026-01-01&end_date=2026-01-02';
    const asKey = await fetch(`${app.baseUrl}${path}`, { headers: { authorization: `Bearer ${key.key}` } });
    expect(asKey.status).toBe(403);
    // A value or a field the schema refuses: LiteLLM's 422; a parameter it does not take: 400.
    const bad = await admin(app, 'GET', `${path}&format=parquet`);
    expect(bad.status).toBe(422);
    expect(bad.body.detail[0]).toMatchObject({
      type: 'literal_error',
      loc: ['query', 'format'],
      input: 'parquet',
    });
    const missing = await admin(app, 'GET', '/spend/logs/export?start_date=2026-01-01');
    expect(missing.status).toBe(422);
    expect(missing.body.detail[0]).toMatchObject({ type: 'missing', loc: ['query', 'end_date'] });
    const unknown = await admin(app, 'GET', `${path}&compress=gzip`);
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.message).toContain('compress');
  });
});
