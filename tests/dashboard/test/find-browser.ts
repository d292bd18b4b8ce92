import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { BUNDLED_CHROME } from './bundled-chromium.js';

/** Where Chrome and Chromium usually are, by platform (Debian's chromium first: CI installs it). */
const KNOWN_PATHS: Record<string, string[]> = {
  linux: [
    '/usr/bin/chromium',
    '/usr/bin/chromium-browser',
    '/usr/bin/google-chrome',
    '/usr/bin/google-chrome-stable',
    '/snap/bin/chromium',
    '/opt/google/chrome/chrome',
  ],
  darwin: [
    '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome',
    '/Applications/Chromium.app/Contents/MacOS/Chromium',
  ],
  win32: [
    join(process.env.PROGRAMFILES ?? 'C:\\Program Files', 'Google', 'Chrome', 'Application', 'chrome.exe'),
    join(
      process.env['PROGRAMFILES(X86)'] ?? 'C:\\Program Files (x86)',
      'Google',
      'Chrome',
      'Application',
      'chrome.exe',
    ),
    join(process.env.LOCALAPPDATA ?? '', 'Google', 'Chrome', 'Application', 'chrome.exe'),
  ],
};
/**
 * The flags every browser test launches Chromium with: headless, no sandbox (containers, CI runners as
 * root), no GPU, and none of the background traffic (QUIC, updates, sync) a test machine does not need;
 * `/dev/shm` is small in containers.
 */
export const BROWSER_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

const COMMANDS = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome'];

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The browser the dashboard tests drive: `CHROME_PATH` when set (it must exist), else the first Chrome
 * or Chromium found at the usual paths or on PATH, else the Chromium of the npm package
 * `@sparticuz/chromium` that the global setup unpacked (browser-setup.ts; Linux x64); `null` when there
 * is none. `SPENDGUARD_TEST_BROWSER=bundled` picks the npm one first.
 */
export function findChrome(): string | null {
  const given = process.env.CHROME_PATH;
  if (given) {
    if (!executable(given)) throw new Error(`CHROME_PATH=${given} is not an executable file`);
    return given;
  }
  if (process.env.SPENDGUARD_TEST_BROWSER === 'bundled') {
    if (!executable(BUNDLED_CHROME)) {
      throw new Error(
        `SPENDGUARD_TEST_BROWSER=bundled, but ${BUNDLED_CHROME} was not unpacked (browser-setup.ts)`,
      );
    }
    return BUNDLED_CHROME;
  }
  const onPath = (process.env.PATH ?? '')
    .split(delimiter)
    .filter(Boolean)
    .flatMap((dir) => COMMANDS.map((command) => join(dir, command)));
  // Last, the Chromium from the npm registry that the global setup unpacks on a machine with none.
  return [...(KNOWN_PATHS[process.platform] ?? []), ...onPath, BUNDLED_CHROME].find(executable) ?? null;
}

/**
 * The browser for a test file: in CI every test runs, so no browser is a failure there; elsewhere (a
 * laptop with only Node and npm) `null`, after a printed notice, and the file's browser tests skip.
 */
export function browserForTests(): string | null {
  const found = findChrome();
  if (!found && process.env.CI) {
    throw new Error(
      'The dashboard browser tests need Chrome or Chromium: set CHROME_PATH, or install one (`apt-get install chromium`).',
    );
  }
  if (!found) {
    console.warn(
      '[dashboard] no Chrome or Chromium found (CHROME_PATH, the usual paths, PATH; the npm one is Linux x64 only): the browser tests are skipped',
    );
  }
  return found;
}
