import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type DashboardApp, FRAMEWORKS, MASTER, startDashboardApp } from './dashboard-app.js';
import { BROWSER_ARGS, browserForTests } from './find-browser.js';

const CHROMIUM = browserForTests();
const SHOTS = fileURLToPath(new URL('../../../.test-artifacts/screenshots/', import.meta.url));

/** Real guarded calls through the official client: they are what the dashboard shows. */
async function seed(app: DashboardApp): Promise<void> {
  await app.admin('POST', '/team/new', { team_id: 'growth', team_alias: 'Growth', max_budget: 0.0001 });
  await app.admin('POST', '/team/new', { team_id: 'platform', team_alias: 'Platform', max_budget: 50 });
  await app.admin('POST', '/user/new', {
    user_id: 'alice@acme.com',
    team_id: 'growth',
    auto_create_key: false,
  });
  const growth = (
    await app.admin('POST', '/key/generate', {
      user_id: 'alice@acme.com',
      team_id: 'growth',
      key_alias: 'growth-bot',
    })
  ).key;
  const platform = (
    await app.admin('POST', '/key/generate', { team_id: 'platform', key_alias: 'platform-ci' })
  ).key;
  const calls: [string, string[]][] = [
    [growth, ['feature:onboarding', 'env:prod']],
    [growth, ['feature:onboarding']],
    [growth, ['feature:search', 'env:prod']],
    [platform, ['env:staging']],
    [platform, ['env:staging']],
  ];
  for (const [key, tags] of calls) {
    const client = new OpenAI({ apiKey: key, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
    await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Summarise our onboarding funnel in one line.' }],
      max_tokens: 20,
      // @ts-expect-error LiteLLM's `tags` body field, which the guard reads
      tags,
    });
  }
  await app.settled();
}

/** Signs in on the login page with the master key, and waits for the Spend page. */
async function signIn(page: Page, app: DashboardApp): Promise<void> {
  await page.goto(`${app.baseUrl}/admin/ui`);
  await page.getByLabel('Username').fill('admin');
  await page.getByLabel('Password').fill(MASTER);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('body[data-ready="spend"]');
}

// Each test has a browser context of its own (its own cookies) and signs in itself, so that none depends
// on another having run; the one that changes data (a key's calls) does it on an app of its own.
describe.skipIf(!CHROMIUM).each(FRAMEWORKS)('the dashboard in chromium, on $name', (framework) => {
  let app: DashboardApp;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const shot = (name: string) =>
    page.screenshot({ path: join(SHOTS, `${framework.name}-${name}.png`), fullPage: true });

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    app = await startDashboardApp(framework);
    await seed(app);
    browser = await chromium.launch({ executablePath: CHROMIUM!, headless: true, args: BROWSER_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    await app?.close();
  });
  beforeEach(async () => {
    context = await browser.newContext({ viewport: { width: 1366, height: 860 } });
    page = await context.newPage();
    page.on('dialog', (d) => void d.accept());
  });
  afterEach(async () => {
    await context?.close();
  });

  it('logs in (a wrong password is refused) and lands on Spend', async () => {
    await page.goto(`${app.baseUrl}/admin/ui`);
    expect(new URL(page.url()).pathname).toBe('/admin/ui/login');
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill('not-the-master-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('Wrong username or password');
    await shot('login-refused');
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill(MASTER);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForSelector('body[data-ready="spend"]');
    expect(new URL(page.url()).pathname).toBe('/admin/ui/');
    const cookies = await context.cookies();
    expect(cookies.find((c) => c.name === 'spendguard_session')).toMatchObject({
      httpOnly: true,
      sameSite: 'Strict',
      path: '/admin/ui',
    });
  });

  it("shows a seeded team's spend and its chart", async () => {
    await signIn(page, app);
    await page.waitForSelector('#spend-chart canvas');
    const table = page.locator('.table-wrap table');
    await expect.poll(() => table.textContent()).toContain('Growth');
    const growthRow = table.locator('tr', { hasText: 'Growth' });
    expect(await growthRow.locator('td').nth(2).textContent()).toBe('3'); // requests
    expect(await page.locator('.uplot .u-legend').textContent()).toContain('Growth');
    expect(await page.locator('.card', { hasText: 'Requests' }).textContent()).toContain('5');
    await shot('spend-by-team');
  });

  it('groups spend by tag, and answers a tag combination', async () => {
    await signIn(page, app);
    await page.getByLabel('Group by').selectOption('tag');
    await page.getByRole('button', { name: 'Apply' }).click();
    await expect.poll(() => page.locator('.table-wrap table').textContent()).toContain('feature:onboarding');
    const row = page.locator('.table-wrap tbody tr', { hasText: 'env:prod' });
    expect(await row.locator('td').nth(2).textContent()).toBe('2');
    await page.waitForSelector('#spend-chart canvas');
    await shot('spend-by-tag');
    await page.getByLabel('Group by').selectOption('none');
    await page.getByLabel('Tags').fill('feature:onboarding AND env:prod');
    await page.getByRole('button', { name: 'Apply' }).click();
    await expect.poll(() => page.locator('.note, .warning').first().textContent()).toContain('cannot tell');
    expect(await page.locator('.card', { hasText: 'Requests' }).locator('.card-value').textContent()).toBe(
      '1',
    );
  });

  it('generates a key and shows it once; blocking it makes its next call a 401', async () => {
    // Its calls add spend: on an app of its own, so that the other tests' numbers do not depend on it.
    const own = await startDashboardApp(framework);
    await own.admin('POST', '/team/new', { team_id: 'growth', team_alias: 'Growth' });
    await own.admin('POST', '/key/generate', { key_alias: 'platform-ci' });
    try {
      await generateBlockRotate(own);
    } finally {
      await own.close();
    }
  });

  async function generateBlockRotate(app: DashboardApp): Promise<void> {
    await signIn(page, app);
    await page.getByRole('link', { name: 'Keys' }).click();
    await page.waitForSelector('body[data-ready="keys"]');
    // A value the schema refuses answers LiteLLM's 422: the page shows its field and message.
    await page.getByLabel('Alias').fill('a'.repeat(257));
    await page.getByRole('button', { name: 'Generate key' }).click();
    await expect
      .poll(() => page.locator('[aria-live] .error').textContent())
      .toBe('key_alias: Value error, must be at most 256 characters');
    await page.getByLabel('Alias').fill('browser-key');
    await page.getByLabel('Team id').fill('growth');
    await page.getByLabel('Max budget (USD)').fill('5');
    await page.getByRole('button', { name: 'Generate key' }).click();
    const secret = (await page.getByTestId('new-key').textContent()) ?? '';
    expect(secret).toMatch(/^sk-[\w-]{20,}$/);
    await shot('key-generated');
    const client = new OpenAI({ apiKey: secret, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
    const ask = () =>
      client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 5,
      });
    expect((await ask()).choices.length).toBe(1);
    // Shown once: after a reload the key is nowhere on the page, only its masked name.
    await page.reload();
    await page.waitForSelector('body[data-ready="keys"]');
    const row = page.locator('.table-wrap tbody tr', { hasText: 'browser-key' });
    await expect.poll(() => row.count()).toBe(1);
    expect(await page.content()).not.toContain(secret);

    await row.getByRole('button', { name: 'Block' }).click();
    await expect.poll(() => row.locator('.status').textContent()).toBe('blocked');
    const refused = await ask().then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(OpenAI.APIError);
    expect((refused as InstanceType<typeof OpenAI.APIError>).status).toBe(401);
    await shot('key-blocked');

    await row.getByRole('button', { name: 'Delete' }).click();
    await expect.poll(() => page.locator('.table-wrap tbody tr', { hasText: 'browser-key' }).count()).toBe(0);
    expect(((await ask().catch((e: unknown) => e)) as { status?: number }).status).toBe(401);

    // Rotate shows what /key/regenerate answers: the new key once, or the route's error where this
    // deployment has no such route.
    const platform = page.locator('.table-wrap tbody tr', { hasText: 'platform-ci' });
    await platform.getByRole('button', { name: 'Rotate' }).click();
    const answer = page.locator('[aria-live] .error, [aria-live] .secret-box');
    await answer.waitFor();
    expect(await answer.textContent()).toMatch(/sk-[\w-]{20,}/); // the new secret, shown once
    await shot('key-rotate');
  }

  it('shows budgets, models, and opens a log detail', async () => {
    await signIn(page, app);
    await page.getByRole('link', { name: 'Budgets' }).click();
    await page.waitForSelector('body[data-ready="budgets"]');
    await page.getByLabel('Used at least').selectOption('0');
    await page.getByRole('button', { name: 'Apply' }).click();
    await expect.poll(() => page.locator('.table-wrap table').textContent()).toContain('Growth');
    await shot('budgets');
    await page.getByRole('link', { name: 'Models' }).click();
    await page.waitForSelector('body[data-ready="models"]');
    await expect.poll(() => page.locator('.table-wrap table').textContent()).toContain('gpt-4o-mini');
    await shot('models');
    await page.getByRole('link', { name: 'Logs' }).click();
    await page.waitForSelector('body[data-ready="logs"]');
    await page.getByLabel('Tag').fill('feature:search');
    await page.getByRole('button', { name: 'Apply' }).click();
    await expect.poll(() => page.locator('.table-wrap tbody tr').count()).toBe(1);
    await shot('logs');
    await page.getByRole('link', { name: 'Details' }).first().click();
    await page.waitForSelector('dl.detail');
    const detail = await page.locator('dl.detail').textContent();
    expect(detail).toContain('feature:search, env:prod');
    expect(detail).toContain('alice@acme.com');
    expect(await page.locator('main').textContent()).toContain('does not store prompt or response bodies');
    await shot('log-detail');
  });

  it('logs out with its CSRF token, and the dashboard is closed again', async () => {
    await signIn(page, app);
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.waitForURL(/\/admin\/ui\/login$/);
    const res = await page.request.get(`${app.baseUrl}/admin/ui/api/session`);
    expect(res.status()).toBe(401);
  });
});
