import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  compatTable,
  LITELLM_COST_ROUTES,
  refusedFieldsTable,
  SPENDGUARD_ONLY_ROUTES,
} from '../src/admin/litellm-compat.js';
import { createSpendGuard, MemoryStorage } from '../src/index.js';

const PAGE = join(import.meta.dirname, '..', '..', '..', 'docs', 'litellm-compatibility.md');

/** The text between a generated section's markers; UPDATE_DOCS=1 rewrites it. */
function checkSection(name: string, expected: string): void {
  const start = `<!-- ${name}:start (generated; see litellm-compat-doc.test.ts) -->`;
  const end = `<!-- ${name}:end -->`;
  const page = readFileSync(PAGE, 'utf8');
  const from = page.indexOf(start);
  const to = page.indexOf(end);
  expect(from, `${PAGE} has the ${name} start marker`).toBeGreaterThan(-1);
  expect(to).toBeGreaterThan(from);
  const shown = page.slice(from + start.length, to).trim();
  if (process.env.UPDATE_DOCS && shown !== expected) {
    writeFileSync(PAGE, `${page.slice(0, from + start.length)}\n${expected}\n${page.slice(to)}`);
    return;
  }
  expect(shown).toBe(expected);
}

describe('docs/litellm-compatibility.md', () => {
  const guard = createSpendGuard({ storage: new MemoryStorage(), masterKey: 'sk-master-doc-test' });
  const served = guard.management.routeAccess().map(([route]) => route);

  it('lists every route the management API serves, as LiteLLM names it or as spendguard-only', () => {
    const listed = new Set([
      ...LITELLM_COST_ROUTES.map((e) => e.route),
      ...Object.keys(SPENDGUARD_ONLY_ROUTES),
    ]);
    expect(served.filter((r) => !listed.has(r))).toEqual([]);
  });

  it('calls a route served only when the route table has it, and missing only when it has not', () => {
    for (const entry of LITELLM_COST_ROUTES) {
      expect(served.includes(entry.route), `${entry.route} is ${entry.missing ? 'missing' : 'served'}`).toBe(
        !entry.missing,
      );
    }
  });

  it('shows the route table and the refused fields as the code has them (UPDATE_DOCS=1 rewrites them)', () => {
    checkSection('compat-routes', compatTable(served));
    checkSection('refused-fields', refusedFieldsTable());
  });
});
