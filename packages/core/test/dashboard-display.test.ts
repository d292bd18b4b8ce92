import { MemoryStorage } from '@spendguard/core';
import { describe, expect, it } from 'vitest';
import { byRisk } from '../src/dashboard/dashboard.js';
import { compareValues, listPage } from '../src/dashboard/dashboard-lists.js';
import { budgetEntry } from '../src/queries.js';
import type { BudgetState } from '../src/storage/storage-contract.js';
import { OTHER_COLOUR, PALETTE } from '../ui/chart-palette.js';
import { usd, usdExact } from '../ui/money-format.js';

describe('the money rule', () => {
  it('shows cents from $1, four decimals below, <$0.0001 below that', () => {
    expect(usd(0)).toBe('$0.00');
    expect(usd(1)).toBe('$1.00');
    expect(usd(1234.5)).toBe('$1,234.50');
    expect(usd(1_000_000)).toBe('$1,000,000.00');
    expect(usd(0.09)).toBe('$0.0900');
    expect(usd(0.00463)).toBe('$0.0046');
    expect(usd(0.00465)).toBe('$0.0047'); // half up
    expect(usd(0.99996)).toBe('$1.00'); // rounds up into cents
    expect(usd(0.0001)).toBe('$0.0001');
    expect(usd(0.000015)).toBe('<$0.0001');
    expect(usd(-2.5)).toBe('-$2.50');
    expect(usd(-0.03)).toBe('-$0.0300');
    expect(usd(Number.NaN)).toBe('—');
  });

  it('gives the exact amount to the nano-dollar, at least to the cent', () => {
    expect(usdExact(0.000015)).toBe('$0.000015');
    expect(usdExact(1.5)).toBe('$1.50');
    expect(usdExact(2)).toBe('$2.00');
    expect(usdExact(0.123456789)).toBe('$0.123456789');
    expect(usdExact(-0.5)).toBe('-$0.50');
  });
});

/** sRGB hex to CIELAB (D65), by the CIE formulas; a reference apart from the palette. */
function lab(hex: string): [number, number, number] {
  const [r, g, b] = [1, 3, 5].map((i) => {
    const c = Number.parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  }) as [number, number, number];
  const x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
  const y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  const z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
  const f = (t: number) => (t > 216 / 24389 ? Math.cbrt(t) : (841 / 108) * t + 4 / 29);
  return [116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))];
}

describe('the chart palette', () => {
  it('has 12 colours, every pair (and "other") at least 28 apart in CIELAB', () => {
    // White and black are 100 apart. The old palette's blue and purple (#2f5bd3, #7a5cd6) were 15.8
    // apart and its two oranges (#e0702b, #d2453b) 26.0: the floor is above both.
    const colours = [...PALETTE, OTHER_COLOUR];
    expect(PALETTE.length).toBe(12);
    let closest = Number.POSITIVE_INFINITY;
    for (let i = 0; i < colours.length; i++) {
      for (let j = i + 1; j < colours.length; j++) {
        const [a, b] = [lab(colours[i]!), lab(colours[j]!)];
        const d = Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
        closest = Math.min(closest, d);
        expect(d, `${colours[i]} vs ${colours[j]}`).toBeGreaterThanOrEqual(28);
      }
    }
    expect(Number.isFinite(closest)).toBe(true);
  });

  it('checks distance with a reference that tells near colours apart', () => {
    const [a, b] = [lab('#ffffff'), lab('#000000')];
    expect(Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2])).toBeCloseTo(100, 1);
    const [c, d] = [lab('#4e79a7'), lab('#4e79a8')];
    expect(Math.hypot(c[0] - d[0], c[1] - d[1], c[2] - d[2])).toBeLessThan(1);
  });
});

const NOW = new Date('2026-03-10T12:00:00.000Z');
const DAY = 86_400_000;

function state(id: string, spendNano: number, maxNano: number, resetAt: Date | null = null): BudgetState {
  return {
    scope: { kind: 'team', id },
    maxBudgetNano: maxNano,
    softBudgetNano: null,
    budgetDuration: resetAt ? '30d' : null,
    budgetResetAt: resetAt,
    spendNano,
    reservedNano: 0,
  };
}

describe('the budgets page order (most at risk first)', () => {
  it('puts spent budgets first, then run-outs soonest first, then the rest by used fraction', () => {
    // $1 caps. Burn over 7 days (6.5 elapsed): 6.5 $ burnt = $1/day.
    const usd1 = 1e9;
    const entries = [
      budgetEntry(state('idle-90', 0.9 * usd1, usd1), null, 0, 6.5, NOW), // not spending: rank 3
      budgetEntry(state('slow', 0.5 * usd1, usd1), null, 0.65 * usd1, 6.5, NOW), // $0.1/day: 5 days
      budgetEntry(state('over', 1.2 * usd1, usd1), null, 0, 6.5, NOW),
      budgetEntry(state('fast', 0.2 * usd1, usd1), null, 6.5 * usd1, 6.5, NOW), // $1/day: 0.8 days
      budgetEntry(state('idle-10', 0.1 * usd1, usd1), null, 0, 6.5, NOW),
      // Would run out in 5 days but resets in 2: not at risk of running out.
      budgetEntry(
        state('resets', 0.5 * usd1, usd1, new Date(NOW.getTime() + 2 * DAY)),
        null,
        0.65 * usd1,
        6.5,
        NOW,
      ),
      budgetEntry(state('at-cap', usd1, usd1), null, 0, 6.5, NOW),
    ];
    expect(entries.find((e) => e.scope.id === 'fast')!.projectedRunOut).toEqual(
      new Date(NOW.getTime() + 0.8 * DAY),
    );
    expect([...entries].sort(byRisk).map((e) => e.scope.id)).toEqual([
      'over', // 120 % used
      'at-cap', // 100 %
      'fast', // runs out in 0.8 days
      'slow', // in 5 days
      'idle-90', // 90 %, not running out
      'resets', // 50 %, resets first
      'idle-10',
    ]);
  });
});

describe('entity lists', () => {
  it('sorts empty values last in either direction, text without case', () => {
    expect(compareValues(null, 'a', 1)).toBe(1);
    expect(compareValues(null, 'a', -1)).toBe(1);
    expect(compareValues(2, 10, 1)).toBeLessThan(0);
    expect(compareValues(2, 10, -1)).toBeGreaterThan(0);
    expect(compareValues('b', 'A', 1)).toBeGreaterThan(0);
  });

  it('pages, counts, searches and sorts; refuses a parameter it does not take', async () => {
    const storage = new MemoryStorage();
    const at = (i: number) => new Date(NOW.getTime() - i * 1000);
    const teams = ['Growth', 'platform', 'Search', 'growth-eu', 'Data'];
    await storage.insert(
      teams.map((alias, i) => ({
        type: 'team' as const,
        record: {
          teamId: `t${i}`,
          teamAlias: alias,
          models: [],
          metadata: {},
          blocked: false,
          createdAt: at(i),
        },
        budget: { maxBudgetNano: null, budgetDuration: null, budgetResetAt: null },
      })),
    );
    const page = (q: string) => listPage('teams', new URLSearchParams(q), storage, NOW);
    const all = await page('size=2');
    expect(all).toMatchObject({ total: 5, pages: 3, page: 1, sort: 'name', dir: 'asc' });
    expect(all.rows.map((r) => r.team_alias)).toEqual(['Data', 'Growth']);
    expect((await page('size=2&page=3')).rows.map((r) => r.team_alias)).toEqual(['Search']);
    expect((await page('q=GROW')).rows.map((r) => r.team_alias)).toEqual(['Growth', 'growth-eu']);
    expect((await page('q=grow')).total_unfiltered).toBe(5);
    expect((await page('sort=name&dir=desc')).rows.map((r) => r.team_alias)).toEqual([
      'Search',
      'platform',
      'growth-eu',
      'Growth',
      'Data',
    ]);
    expect((await page('sort=created&dir=desc')).rows.map((r) => r.team_id)).toEqual([
      't0',
      't1',
      't2',
      't3',
      't4',
    ]);
    await expect(page('limit=5')).rejects.toMatchObject({ param: 'limit' });
    await expect(page('sort=colour')).rejects.toMatchObject({ param: 'sort' });
    await expect(page('page=0')).rejects.toMatchObject({ param: 'page' });
    await expect(page('size=101')).rejects.toMatchObject({ param: 'size' });
  });
});
