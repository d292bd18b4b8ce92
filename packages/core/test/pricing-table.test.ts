import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { PriceBook } from '../src/pricing/price-book.js';

/** `pnpm test:mutation` runs these tests once per mutant: it leaves out the slow whole-process ones. */
const IN_MUTATION_RUN = process.env.STRYKER_GROUP !== undefined;

const usage = { promptTokens: 1000, completionTokens: 1000 };
const tableV1 = {
  sample_spec: { input_cost_per_token: 0, output_cost_per_token: 0 },
  'house-model': { litellm_provider: 'house', input_cost_per_token: 1e-6, output_cost_per_token: 2e-6 },
};
const tableV2 = {
  'house-model': { litellm_provider: 'house', input_cost_per_token: 3e-6, output_cost_per_token: 4e-6 },
};

const books: PriceBook[] = [];
function book(options: ConstructorParameters<typeof PriceBook>[0]): PriceBook {
  const created = new PriceBook(options);
  books.push(created);
  return created;
}
afterEach(() => {
  for (const created of books.splice(0)) created.close();
});

describe('PriceBook table: a parsed object', () => {
  it('replaces the bundled snapshot', () => {
    const prices = book({ table: tableV1 });
    // 1000 x 1e-6 + 1000 x 2e-6
    expect(prices.cost('house-model', usage).totalNano).toBe(3_000_000);
    expect(prices.resolve('gpt-4o')).toBeUndefined();
  });

  it('refuses what is not a price table, saying what was expected', () => {
    expect(() => new PriceBook({ table: [] as never })).toThrow(
      /parsed object, a file path or an http\(s\) URL/,
    );
    expect(() => new PriceBook({ table: {} })).toThrow(/prices no model/);
  });

  it('refresh() has nothing to do', async () => {
    await expect(book({ table: tableV1 }).refresh()).resolves.toBe(false);
  });
});

describe('PriceBook table: a file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'spendguard-prices-'));
  const path = join(dir, 'model_prices_and_context_window.json');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a path or a file: URL when created, and re-reads it on refresh(), keeping the last good table', async () => {
    writeFileSync(path, JSON.stringify(tableV1));
    const onError = vi.fn();
    const prices = book({ table: path, onError });
    expect(prices.cost('house-model', usage).totalNano).toBe(3_000_000);
    expect(book({ table: pathToFileURL(path) }).cost('house-model', usage).totalNano).toBe(3_000_000);

    writeFileSync(path, JSON.stringify(tableV2));
    await expect(prices.refresh()).resolves.toBe(true);
    // 1000 x 3e-6 + 1000 x 4e-6
    expect(prices.cost('house-model', usage).totalNano).toBe(7_000_000);

    writeFileSync(path, '{"house-model": {"input_cost_per_token": 1e-6,'); // cut short
    await expect(prices.refresh()).resolves.toBe(false);
    expect(onError).toHaveBeenCalledTimes(1);
    expect(onError.mock.calls[0]?.[0]).toBeInstanceOf(Error);
    expect(String(onError.mock.calls[0]?.[0].message)).toMatch(/not valid JSON/);
    expect(prices.cost('house-model', usage).totalNano).toBe(7_000_000);
  });

  it('an unreadable file is a config error at construction', () => {
    expect(() => new PriceBook({ table: join(dir, 'missing.json') })).toThrow(
      /cannot read the price table .*missing\.json/,
    );
  });
});

describe('PriceBook table: a URL', () => {
  let server: Server;
  let url: string;
  let status = 200;
  let body = JSON.stringify(tableV1);
  let hits = 0;

  beforeAll(async () => {
    server = createServer((_req, res) => {
      hits++;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/model_prices_and_context_window.json`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve, reject) =>
      server.close((error) => (error ? reject(error) : resolve())),
    );
  });

  it('prices from the snapshot until the download lands, then from the download', async () => {
    status = 200;
    body = JSON.stringify(tableV1);
    const prices = book({ table: url });
    // The first download is in flight: the bundled snapshot prices calls meanwhile.
    expect(prices.resolve('gpt-4o')?.inputPico).toBe(2_500_000);
    await expect(prices.refresh()).resolves.toBe(true);
    expect(prices.resolve('gpt-4o')).toBeUndefined();
    expect(prices.cost('house-model', usage).totalNano).toBe(3_000_000);
  });

  it('a failed or malformed refresh keeps the last good table and reports to onError', async () => {
    status = 200;
    body = JSON.stringify(tableV1);
    const onError = vi.fn();
    const prices = book({ table: url, onError });
    await expect(prices.refresh()).resolves.toBe(true);
    expect(prices.cost('house-model', usage).totalNano).toBe(3_000_000);

    const failures: Array<[number, string, RegExp]> = [
      [500, 'upstream exploded', /HTTP 500/],
      [200, '<html>not json</html>', /not valid JSON/],
      [200, '[]', /expected LiteLLM's model_prices_and_context_window\.json/],
      [200, JSON.stringify({ sample_spec: {} }), /prices no model/],
    ];
    for (const [failStatus, failBody, message] of failures) {
      status = failStatus;
      body = failBody;
      await expect(prices.refresh()).resolves.toBe(false);
      expect(onError).toHaveBeenLastCalledWith(
        expect.objectContaining({ message: expect.stringMatching(message) }),
      );
      expect(prices.cost('house-model', usage).totalNano).toBe(3_000_000);
    }
    expect(onError).toHaveBeenCalledTimes(failures.length);

    status = 200;
    body = JSON.stringify(tableV2);
    await expect(prices.refresh()).resolves.toBe(true);
    expect(prices.cost('house-model', usage).totalNano).toBe(7_000_000);
  });

  it('concurrent refreshes share one download', async () => {
    status = 200;
    body = JSON.stringify(tableV1);
    const prices = book({ table: url, refreshIntervalMs: 0 });
    await prices.refresh();
    const before = hits;
    const [a, b] = await Promise.all([prices.refresh(), prices.refresh()]);
    expect([a, b]).toEqual([true, true]);
    expect(hits - before).toBe(1);
  });

  it('refreshes on its interval until close()', async () => {
    status = 200;
    body = JSON.stringify(tableV1);
    const before = hits;
    const prices = book({ table: url, refreshIntervalMs: 25 });
    await vi.waitFor(() => expect(hits - before).toBeGreaterThanOrEqual(3), { timeout: 5000, interval: 10 });
    prices.close();
    const atClose = hits;
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(hits - atClose).toBeLessThanOrEqual(1); // at most one request already on the wire
    await expect(prices.refresh()).resolves.toBe(false);
    // Still prices with the last good table after close().
    expect(prices.cost('house-model', usage).totalNano).toBe(3_000_000);
  });

  it('validates refreshIntervalMs', () => {
    expect(() => new PriceBook({ table: url, refreshIntervalMs: -1 })).toThrow(/refreshIntervalMs/);
  });
});

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

/** Runs an ES module snippet in a fresh Node process with the TypeScript sources loadable. */
function runNode(code: string): Promise<{ code: number | null; stdout: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--conditions=spendguard-source', '--import', 'tsx', '--input-type=module', '-e', code],
      { cwd: repoRoot, timeout: 20_000 },
      (error, stdout, stderr) => {
        if (error?.killed) reject(new Error(`timed out: ${stderr}`));
        else
          resolve({
            code: error ? (error.code as number) : 0,
            stdout: stdout + stderr,
            ms: Date.now() - started,
          });
      },
    );
  });
}

describe('process behaviour', () => {
  // Left out of `pnpm test:mutation` (STRYKER_GROUP set): seconds for every mutant it would cover.
  it.skipIf(IN_MUTATION_RUN)('the refresh timer never keeps the process alive', async () => {
    const result = await runNode(`
      import { PriceBook } from './packages/core/src/pricing/price-book.ts';
      new PriceBook({ table: 'http://127.0.0.1:9/prices.json', refreshIntervalMs: 60_000, onError: () => {} });
      console.log('created');
    `);
    expect(result.stdout).toContain('created');
    expect(result.code).toBe(0);
  });

  // Left out of `pnpm test:mutation` (STRYKER_GROUP set): seconds for every mutant it would cover.
  it.skipIf(IN_MUTATION_RUN)('the snapshot loads on first use, not at import', async () => {
    const result = await runNode(`
      import fs from 'node:fs';
      import { syncBuiltinESMExports } from 'node:module';
      const reads = [];
      const original = fs.readFileSync;
      fs.readFileSync = (path, ...rest) => {
        if (String(path).endsWith('snapshot.json')) reads.push(String(path));
        return original(path, ...rest);
      };
      syncBuiltinESMExports();
      const core = await import('./packages/core/src/index.ts');
      console.log('after import', reads.length);
      new core.PriceBook();
      console.log('after new PriceBook', reads.length);
      core.calculateCost('gpt-4o', { prompt_tokens: 1, completion_tokens: 1 });
      core.calculateCost('claude-sonnet-4-5', { input_tokens: 1, output_tokens: 1 });
      console.log('after pricing', reads.length);
    `);
    expect(result.stdout).toContain('after import 0');
    expect(result.stdout).toContain('after new PriceBook 0');
    expect(result.stdout).toContain('after pricing 1');
  });
});
