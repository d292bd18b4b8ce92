import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { accessTable, NARROWED } from '../src/admin/access-rules.js';
import { createSpendGuard, MemoryStorage } from '../src/index.js';

const PAGE = join(import.meta.dirname, '..', '..', '..', 'docs', 'access-control.md');
const START = '<!-- access-table:start (generated from the route table; see access-control-doc.test.ts) -->';
const END = '<!-- access-table:end -->';

describe('docs/access-control.md', () => {
  const guard = createSpendGuard({ storage: new MemoryStorage(), masterKey: 'sk-master-doc-test' });
  const routes = guard.management.routeAccess();

  it('describes what a team admin (and a key) may do on every route it is let into, and on no other', () => {
    const shared = routes
      .filter(([, access]) => access !== 'admin' && access !== 'public')
      .map(([route]) => route);
    expect(Object.keys(NARROWED).sort()).toEqual(shared.sort());
    for (const [route, access] of routes) {
      if (access === 'self') expect(NARROWED[route]?.key, route).toBeTruthy();
    }
  });

  it('shows the role x route table the route table gives (UPDATE_DOCS=1 rewrites it)', () => {
    const page = readFileSync(PAGE, 'utf8');
    const start = page.indexOf(START);
    const end = page.indexOf(END);
    expect(start, `${PAGE} has the table's start marker`).toBeGreaterThan(-1);
    expect(end).toBeGreaterThan(start);
    const table = accessTable(routes);
    const shown = page.slice(start + START.length, end).trim();
    if (process.env.UPDATE_DOCS && shown !== table) {
      writeFileSync(PAGE, `${page.slice(0, start + START.length)}\n${table}\n${page.slice(end)}`);
      return;
    }
    expect(shown).toBe(table);
  });
});
