import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { seedSqlite } from '@spendguard/seed';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DashboardApp, FRAMEWORKS, MASTER, startDashboardApp } from './dashboard-app.js';
import { BROWSER_ARGS, browserForTests } from './find-browser.js';

/**
 * The dashboard as people use it (issue 21), on the seeded demo: 100,000 calls over 90 days, 355 keys
 * (DASHBOARD_DEMO_CALLS sets another size). Every page at 1400 px and 420 px is kept as a screenshot in
 * .test-artifacts/dashboard/, and each page's load time (navigation start to the page drawn, from the
 * browser's own clock) is written to timings.json there and printed: reported, never asserted.
 */
const CHROMIUM = browserForTests();
const OUT = fileURLToPath(new URL('../../../.test-artifacts/dashboard/', import.meta.url));
const CALLS = Number(process.env.DASHBOARD_DEMO_CALLS || 100_000);
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;
/** The one money rule (packages/core/ui/money-format.ts), as a person reads it. */
const MONEY = /^-?(\$\d{1,3}(,\d{3})*\.\d{2}|\$0\.\d{4}|<\$0\.0001)$/;

const express = FRAMEWORKS.find((f) => f.name === 'express')!;

describe.skipIf(!CHROMIUM)('the dashboard on the seeded demo, in chromium', () => {
  let app: DashboardApp;
  let browser: Browser;
  let cookie: { name: string; value: string; url: string }[];
  const timings: Record<string, { width: number; readyMs: number; loadEventMs: number; warmMs?: number }[]> =
    {};
  /** Every HTTP error answer the browser saw (a missing favicon would be one). */
  const failures: string[] = [];

  beforeAll(async () => {
    mkdirSync(OUT, { recursive: true });
    const dbPath = join(mkdtempSync(join(tmpdir(), 'spendguard-demo-')), 'demo.db');
    await seedSqlite(dbPath, { calls: CALLS, seed: 1 });
    app = await startDashboardApp(express, { dbPath });
    browser = await chromium.launch({ executablePath: CHROMIUM!, headless: true, args: BROWSER_ARGS });
    // Sign in once; every page below opens in a fresh page with this session.
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${app.baseUrl}/admin/ui/login`);
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill(MASTER);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForSelector('body[data-ready="spend"]');
    const session = (await context.cookies()).find((c) => c.name === 'spendguard_session')!;
    cookie = [{ name: session.name, value: session.value, url: `${app.baseUrl}/admin/ui` }];
    await context.close();
  }, 180_000);

  afterAll(async () => {
    if (Object.keys(timings).length) {
      writeFileSync(join(OUT, 'timings.json'), `${JSON.stringify({ calls: CALLS, timings }, null, 2)}\n`);
      const lines = Object.entries(timings).map(
        ([name, t]) =>
          `${name.padEnd(14)} ${t.map((x) => `${x.width}px: ${x.readyMs}${x.warmMs === undefined ? '' : ` / ${x.warmMs}`} ms`).join(', ')}`,
      );
      console.log(
        `page drawn, ms after navigation start (${CALLS} calls), first load / again with the bundle cached:\n${lines.join('\n')}`,
      );
    }
    await browser?.close();
    await app?.close();
  });

  /** Opens `hash` in a fresh page `width` px wide, waits until it is drawn, records its timing. */
  async function open(hash: string, section: string, width = 1400, name = section): Promise<Page> {
    const context = await browser.newContext({ viewport: { width, height: 1000 } });
    await context.addCookies(cookie);
    const page = await context.newPage();
    page.on('dialog', (d) => void d.accept());
    page.on('response', (r) => {
      if (r.status() >= 400) failures.push(`${r.status()} ${r.url()}`);
    });
    await page.goto(`${app.baseUrl}/admin/ui/${hash}`);
    await page.waitForSelector(`body[data-ready="${section}"]`, { timeout: 60_000 });
    const readyMs = Number(await page.evaluate(() => document.body.dataset.readyMs));
    const loadEventMs = await page.evaluate(() => {
      const [nav] = performance.getEntriesByType('navigation') as PerformanceNavigationTiming[];
      return Math.round(nav?.loadEventEnd ?? 0);
    });
    // The same page opened again, as a person moving between pages sees it: the bundle is kept by
    // the browser (its versioned URL is immutable), so only the page's own data is fetched.
    await page.goto('about:blank');
    await page.goto(`${app.baseUrl}/admin/ui/${hash}`);
    await page.waitForSelector(`body[data-ready="${section}"]`, { timeout: 60_000 });
    const warmMs = Number(await page.evaluate(() => document.body.dataset.readyMs));
    timings[name] = [...(timings[name] ?? []), { width, readyMs, loadEventMs, warmMs }];
    return page;
  }

  async function shoot(page: Page, name: string): Promise<void> {
    const width = page.viewportSize()!.width;
    await page.screenshot({ path: join(OUT, `${name}-${width}.png`), fullPage: true });
  }

  /** Horizontal overflow: of the document, and of each table inside its box. */
  async function overflow(page: Page) {
    return page.evaluate(() => ({
      document: document.documentElement.scrollWidth - window.innerWidth,
      tables: Array.from(document.querySelectorAll<HTMLElement>('.table-wrap')).map(
        (w) => w.scrollWidth - w.clientWidth,
      ),
      nav: (() => {
        const nav = document.querySelector<HTMLElement>('header nav')!;
        return nav.scrollWidth - nav.clientWidth;
      })(),
    }));
  }

  const PAGES: [hash: string, section: string][] = [
    ['#/spend', 'spend'],
    ['#/budgets?min=0', 'budgets'],
    ['#/keys', 'keys'],
    ['#/teams', 'teams'],
    ['#/users', 'users'],
    ['#/customers', 'customers'],
    ['#/tags', 'tags'],
    ['#/models', 'models'],
    ['#/logs', 'logs'],
  ];

  it('draws every page without sideways scrolling at 1280 px and up, and a usable 420 px layout', async () => {
    const teams: { team_id: string }[] = await app.admin('GET', '/team/list');
    const key = (await app.admin('GET', '/key/list?size=1')).keys[0] as string;
    const logs = await fetch(`${app.baseUrl}/admin/ui/api/logs?limit=1`, {
      headers: { cookie: `${cookie[0]!.name}=${cookie[0]!.value}` },
    });
    const [log] = ((await logs.json()) as { logs: { request_id: string }[] }).logs;
    const all: [string, string, string][] = [
      ...PAGES.map(([h, s]): [string, string, string] => [h, s, s]),
      [`#/team/${encodeURIComponent(teams[0]!.team_id)}`, 'team', 'team'],
      [`#/key/${encodeURIComponent(key)}`, 'key', 'key'],
      [`#/logs/${encodeURIComponent(log!.request_id)}`, 'logs', 'log-detail'],
    ];
    const check = async (page: Page, name: string) => {
      const width = page.viewportSize()!.width;
      const o = await overflow(page);
      expect(o.nav, `${name} at ${width}: the nav overflows`).toBeLessThanOrEqual(0);
      expect(o.document, `${name} at ${width}: the page scrolls sideways`).toBeLessThanOrEqual(0);
      if (width >= 1280) {
        for (const t of o.tables)
          expect(t, `${name} at ${width}: a table scrolls sideways`).toBeLessThanOrEqual(0);
      }
    };
    for (const [hash, section, name] of all) {
      // Drawn at 1280 px, then widened to 1400 px (wider only adds room); 420 px is drawn afresh.
      const wide = await open(hash, section, 1280, name);
      await check(wide, name);
      await wide.setViewportSize({ width: 1400, height: 1000 });
      await check(wide, name);
      await shoot(wide, name);
      await wide.context().close();
      const narrow = await open(hash, section, 420, name);
      await check(narrow, name);
      await shoot(narrow, name);
      await narrow.context().close();
    }
    // The floor on this machine, in the same run: the sign-in page (static HTML, no bundle, no query).
    for (const width of [1280, 420]) {
      const context = await browser.newContext({ viewport: { width, height: 1000 } });
      const page = await context.newPage();
      await page.goto(`${app.baseUrl}/admin/ui/login`);
      const ms = await page.evaluate(() => Math.round(performance.now()));
      timings['login (floor)'] = [
        ...(timings['login (floor)'] ?? []),
        { width, readyMs: ms, loadEventMs: ms },
      ];
      await context.close();
    }
    // The icon the pages link is served, and nothing the pages asked for was refused or missing.
    expect(failures).toEqual([]);
    const icon = await fetch(`${app.baseUrl}/admin/ui/favicon.ico`);
    expect(icon.status).toBe(200);
    expect(icon.headers.get('content-type')).toBe('image/svg+xml');
  }, 600_000);

  it('keeps the Keys actions and the Logs cost columns on screen at 1280 px', async () => {
    const keys = await open('#/keys', 'keys', 1280, 'keys');
    const right = (page: Page, selector: string) =>
      page.evaluate((s) => {
        const box = Array.from(document.querySelectorAll('.table-wrap')).at(-1)!.getBoundingClientRect();
        const el = document.querySelector(s)!.getBoundingClientRect();
        return { el: el.right, box: box.right, viewport: window.innerWidth };
      }, selector);
    const actions = await right(keys, 'tbody tr:first-child .row-actions button:last-child');
    expect(actions.el).toBeLessThanOrEqual(actions.box);
    await keys.context().close();
    const logs = await open('#/logs', 'logs', 1280, 'logs');
    const details = await right(logs, 'tbody tr:first-child td:last-child a');
    expect(details.el).toBeLessThanOrEqual(Math.min(details.box, details.viewport));
    expect(await logs.locator('thead').textContent()).toMatch(/Tokens.*Cost.*Latency/);
    await logs.context().close();
    const budgets = await open('#/budgets?min=0', 'budgets', 1280, 'budgets');
    const resets = await right(budgets, 'thead th:last-child');
    expect(await budgets.locator('thead th:last-child').textContent()).toBe('Resets');
    expect(resets.el).toBeLessThanOrEqual(resets.box);
    await budgets.context().close();
  }, 120_000);

  it('shows names, not ids, on Keys, Logs, Budgets and a log detail; ids on hover and in the detail', async () => {
    const teams: { team_id: string; team_alias: string }[] = await app.admin('GET', '/team/list');
    const aliases = new Set(teams.map((t) => t.team_alias));
    for (const [hash, section] of [
      ['#/keys', 'keys'],
      ['#/logs', 'logs'],
      ['#/budgets?min=0', 'budgets'],
    ] as const) {
      const page = await open(hash, section, 1400);
      const cells = await page.locator('tbody td').allTextContents();
      expect(
        cells.filter((c) => UUID.test(c)),
        `${section} shows a raw id`,
      ).toEqual([]);
      const links = await page
        .locator('tbody a[href^="#/team/"]')
        .evaluateAll((as) => as.map((a) => ({ text: a.textContent, title: a.getAttribute('title') })));
      expect(links.length, `${section} names no team`).toBeGreaterThan(0);
      for (const l of links) {
        expect(aliases.has(l.text!), `${l.text} is a team alias`).toBe(true);
        const id = teams.find((t) => t.team_alias === l.text)!.team_id;
        expect(l.title).toBe(`team id: ${id}`);
      }
      await page.context().close();
    }
    const logs = await open('#/logs', 'logs', 1400);
    const first = logs.locator('tbody tr').first();
    const teamText = await first.locator('a[href^="#/team/"]').textContent();
    await first.getByRole('link', { name: 'Details' }).click();
    await logs.waitForSelector('dl.detail');
    const detail = await logs.locator('dl.detail').textContent();
    const team = teams.find((t) => t.team_alias === teamText)!;
    expect(detail).toContain(`${team.team_alias} ${team.team_id}`); // the name, and its id beside it
    await logs.context().close();
  }, 120_000);

  it('pages, counts, searches and sorts the key list on the server; a generated key is listed at once', async () => {
    const all = (await app.guard.keys.list()).map((k) => ({
      alias: k.keyAlias ?? k.keyName,
      spend: k.budget?.spend ?? 0,
    }));
    const page = await open('#/keys', 'keys', 1400);
    const count = page.locator('.pager .count');
    expect(await count.textContent()).toBe(`1–25 of ${all.length.toLocaleString('en-US')}`);
    expect(await page.locator('tbody tr').count()).toBe(25);
    await page.getByRole('button', { name: 'Next ›' }).click();
    await expect.poll(() => count.textContent()).toBe(`26–50 of ${all.length.toLocaleString('en-US')}`);
    expect(page.url()).toContain('page=2');

    // Search: a word of the first alias; the count is every key whose alias, name, team or tags hold it.
    const word = all[0]!.alias.split(/[-_ ]/)[0]!.toLowerCase();
    await page.getByRole('searchbox', { name: 'Search' }).fill(word);
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForURL(/q=/);
    await page.waitForSelector('body[data-ready="keys"]');
    await expect.poll(() => page.locator('.note').first().textContent()).toContain(`match “${word}”`);
    const shown = await page.locator('tbody tr td:first-child').allTextContents();
    expect(shown.length).toBeGreaterThan(0);
    for (const alias of shown) expect(alias.toLowerCase()).toContain(word);

    // Sort by spend, most first: the column never rises down the page.
    await page.getByRole('searchbox', { name: 'Search' }).fill('');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('button', { name: 'Spend' }).click();
    await expect.poll(() => page.locator('th[aria-sort="descending"]').textContent()).toContain('Spend');
    const spends = (await page
      .locator('tbody tr td:nth-child(5) .money')
      .evaluateAll((els) =>
        els.map((e) => Number((e.getAttribute('title') ?? '').replace(/[$,]/g, ''))),
      )) as number[];
    const topSpend = Math.max(...all.map((k) => k.spend));
    expect(spends[0]).toBeCloseTo(topSpend, 9);
    for (let i = 1; i < spends.length; i++) expect(spends[i]!).toBeLessThanOrEqual(spends[i - 1]!);
    await shoot(page, 'keys-sorted-by-spend');

    // A key generated from the form is the first row of the list right away.
    await page.getByLabel('Alias').fill('issue-21-new-key');
    await page.getByRole('button', { name: 'Generate key' }).click();
    await page.getByTestId('new-key').waitFor();
    await expect.poll(() => page.locator('tbody tr').first().textContent()).toContain('issue-21-new-key');
    expect(await count.textContent()).toBe(`1–25 of ${(all.length + 1).toLocaleString('en-US')}`);
    await page.context().close();
  }, 120_000);

  it('lists teams, users, customers and tags with counts, search and paging', async () => {
    const expected = {
      teams: (await app.guard.teams.list()).length,
      users: (await app.guard.users.list()).length,
      customers: ((await app.admin('GET', '/customer/list')) as unknown[]).length,
      tags: ((await app.admin('GET', '/tag/list')) as unknown[]).length,
    };
    for (const [kind, total] of Object.entries(expected)) {
      const page = await open(`#/${kind}`, kind, 1400);
      const first = Math.min(total, 25);
      expect(await page.locator('.pager .count').textContent()).toBe(
        `${total ? 1 : 0}–${first} of ${total.toLocaleString('en-US')}`,
      );
      await page.context().close();
    }
  }, 120_000);

  it('pages the Spend breakdown, and charts up to 12 series in distinct colours with one money format', async () => {
    const page = await open('#/spend?groupBy=user', 'spend', 1400, 'spend-by-user');
    await page.waitForSelector('#spend-chart canvas');
    const rowsOnPage = await page.locator('#breakdown tbody tr').count();
    const report = await page.evaluate(async () => {
      const r = await fetch('api/spend?groupBy=user');
      return ((await r.json()) as { rows: unknown[] }).rows.length;
    });
    expect(report).toBeGreaterThan(50);
    expect(rowsOnPage).toBe(50);
    expect(await page.locator('#breakdown .pager .count').textContent()).toBe(
      `1–50 of ${report.toLocaleString('en-US')}`,
    );
    const colours = await page
      .locator('.u-legend .u-series:not(:first-child) .u-marker')
      .evaluateAll((els) => els.map((e) => getComputedStyle(e).borderColor));
    expect(colours.length).toBe(11); // the top 10 users and "other"
    expect(new Set(colours).size).toBe(colours.length);
    const money = await page.locator('#breakdown .money, .card .money').allTextContents();
    for (const m of money) expect(m).toMatch(MONEY);
    await shoot(page, 'spend-by-user');
    await page.context().close();
  }, 120_000);

  it('opens a team page and a key page from table rows: spend over time, budget burn, top models, calls, limits', async () => {
    const page = await open('#/keys', 'keys', 1400);
    const teamLink = page.locator('tbody a[href^="#/team/"]').first();
    const teamName = await teamLink.textContent();
    await teamLink.click();
    await page.waitForSelector('body[data-ready="team"]');
    await page.waitForSelector('#entity-chart canvas');
    expect(await page.locator('h1').textContent()).toBe(`Team ${teamName}`);
    const cards = await page.locator('.card').allTextContents();
    expect(cards.join(' | ')).toMatch(/Budget used.*Burn per day.*Runs out/);
    expect(await page.locator('h2', { hasText: 'Top models' }).count()).toBe(1);
    expect(await page.locator('dl[aria-label="Limits"]').textContent()).toContain('Requests per minute');
    const calls = page.locator('table').last().locator('tbody tr');
    expect(await calls.count()).toBeGreaterThan(0);
    // Every recent call on a team's page is that team's.
    for (const t of await calls.locator('a[href^="#/team/"]').allTextContents()) expect(t).toBe(teamName);
    await shoot(page, 'team-page');
    const keyLink = calls.first().locator('a[href^="#/key/"]');
    const keyName = await keyLink.textContent();
    await keyLink.click();
    await page.waitForSelector('body[data-ready="key"]');
    await page.waitForSelector('#entity-chart canvas');
    expect(await page.locator('h1').textContent()).toBe(`Key ${keyName}`);
    await shoot(page, 'key-page');
    await page.context().close();
  }, 120_000);

  it('sorts the budgets page by risk: spent first, then soonest run-out, then the rest', async () => {
    const page = await open('#/budgets?min=0', 'budgets', 1400);
    const rows = await page.locator('tbody tr').evaluateAll((trs) =>
      trs.map((tr) => {
        const td = tr.querySelectorAll('td');
        return {
          status: td[2]?.querySelector('.status')?.textContent ?? '',
          runsOut: td[5]?.textContent ?? '',
        };
      }),
    );
    expect(rows.length).toBeGreaterThan(2);
    const rank = (r: { status: string; runsOut: string }) =>
      r.status === 'over' ? 0 : /^\d{4}-\d{2}-\d{2}$/.test(r.runsOut) ? 1 : 2;
    for (let i = 1; i < rows.length; i++) {
      const [a, b] = [rows[i - 1]!, rows[i]!];
      expect(rank(a)).toBeLessThanOrEqual(rank(b));
      if (rank(a) === 1 && rank(b) === 1) expect(a.runsOut <= b.runsOut).toBe(true);
    }
    await page.context().close();
  }, 120_000);
});
