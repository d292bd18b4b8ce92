import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { sqliteStorage } from '../src/index.js';

/** Fresh SQLite files under one temporary folder (removed after the file's tests), and a store opener. */
export function tempStores(prefix: string) {
  const root = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  return {
    root,
    freshPath: () => join(mkdtempSync(join(root, 'db-')), 'spend.db'),
    open: async (path: string) => {
      const s = sqliteStorage({ path });
      await s.init();
      return s;
    },
  };
}
