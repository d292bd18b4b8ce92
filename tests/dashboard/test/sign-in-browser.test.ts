import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AdapterOptions } from '@spendguard/core';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DashboardApp, FRAMEWORKS, startDashboardApp } from './dashboard-app.js';
import { BROWSER_ARGS, browserForTests } from './find-browser.js';

const CHROMIUM = browserForTests();
const PASSWORD = 'browser-dashboard-password';
const T0 = Date.parse('2026-03-10T12:00:00.000Z');

describe.skipIf(!CHROMIUM).each(FRAMEWORKS)(
  'signing in to the dashboard in chromium, on $name',
  (framework) => {
    let clock = T0;
    const options: Partial<AdapterOptions> = {
      now: () => new Date(clock),
      dashboard: { password: PASSWORD, maxLoginFailuresPerClient: 3, loginWindowMs: 60_000 },
    };
    // Two instances of one service on one SQLite file; the cookie (path /admin/ui, host 127.0.0.1)
    // goes to both, whatever their ports.
    let a: DashboardApp;
    let b: DashboardApp;
    const apps: DashboardApp[] = [];
    let context: BrowserContext;
    let page: Page;
    let profile: string;

    const start = async (dbPath?: string) => {
      const app = await startDashboardApp(framework, { dbPath, guardOptions: options });
      apps.push(app);
      return app;
    };
    const signIn = async (app: DashboardApp, password: string) => {
      await page.goto(`${app.baseUrl}/admin/ui/login`);
      await page.getByLabel('Username').fill('admin');
      await page.getByLabel('Password').fill(password);
      const [response] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/admin/ui/login') && r.request().method() === 'POST'),
        page.getByRole('button', { name: 'Sign in' }).click(),
      ]);
      return response;
    };
    const sessionCookie = async () => (await context.cookies()).find((c) => c.name === 'spendguard_session');
    /** Where the dashboard sends this browser: the app (signed in) or the sign-in page. */
    const landing = async (app: DashboardApp) => {
      await page.goto(`${app.baseUrl}/admin/ui/`);
      return new URL(page.url()).pathname;
    };

    beforeAll(async () => {
      a = await start();
      b = await start(a.dbPath);
      profile = mkdtempSync(join(tmpdir(), 'spendguard-chromium-'));
      context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM!,
        headless: true,
        args: BROWSER_ARGS,
      });
      page = await context.newPage();
    });
    afterAll(async () => {
      await context?.close();
      await Promise.all(apps.map((x) => x.close()));
      if (profile) rmSync(profile, { recursive: true, force: true });
    });

    it('throttles sign-ins after 3 wrong passwords: even the right one gets 429 until the window moves on', async () => {
      for (let i = 0; i < 3; i++) {
        clock = T0 + i * 1000;
        const wrong = await signIn(a, `not-the-password-${i}`);
        expect(wrong.status()).toBe(401);
        await expect
          .poll(() => page.getByRole('alert').textContent())
          .toContain('Wrong username or password');
      }
      const throttled = await signIn(a, PASSWORD);
      expect(throttled.status()).toBe(429);
      expect(throttled.headers()['retry-after']).toBe('58');
      await expect
        .poll(() => page.getByRole('alert').textContent())
        .toBe('Too many failed sign-ins; try again in 58 s.');
      expect(await sessionCookie()).toBeUndefined();
      clock = T0 + 60_000;
      const ok = await signIn(a, PASSWORD);
      expect(ok.status()).toBe(303);
      await page.waitForSelector('body[data-ready="spend"]');
      expect(new URL(page.url()).pathname).toBe('/admin/ui/');
    });

    it('logs out on one instance: the old cookie is refused there, on the other instance, and after a restart', async () => {
      const old = await sessionCookie();
      expect(old).toBeDefined();
      // The session lives in the shared store: the second instance lets the same browser in.
      expect(await landing(b)).toBe('/admin/ui/');
      await page.waitForSelector('body[data-ready="spend"]');
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.waitForURL(/\/admin\/ui\/login$/);
      expect(await sessionCookie()).toBeUndefined();

      // Someone kept the old cookie: no instance takes it back.
      await context.addCookies([old!]);
      expect(await landing(a)).toBe('/admin/ui/login');
      await context.addCookies([old!]);
      expect(await landing(b)).toBe('/admin/ui/login');

      // A session that was not logged out survives a restart of both instances; the old one stays refused.
      expect((await signIn(b, PASSWORD)).status()).toBe(303);
      const kept = await sessionCookie();
      await Promise.all(apps.splice(0).map((x) => x.close()));
      const restarted = await start(a.dbPath);
      expect(await landing(restarted)).toBe('/admin/ui/');
      await page.waitForSelector('body[data-ready="spend"]');
      await context.clearCookies();
      await context.addCookies([old!]);
      expect(await landing(restarted)).toBe('/admin/ui/login');
      await context.addCookies([kept!]);
      expect(await landing(restarted)).toBe('/admin/ui/');
    });
  },
);
