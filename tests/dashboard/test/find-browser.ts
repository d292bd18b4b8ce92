import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

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
 * or Chromium found at the usual paths or on PATH; `null` when there is none. Never a downloaded one.
 */
export function findChrome(): string | null {
  const given = process.env.CHROME_PATH;
  if (given) {
    if (!executable(given)) throw new Error(`CHROME_PATH=${given} is not an executable file`);
    return given;
  }
  const onPath = (process.env.PATH ?? '')
    .split(delimiter)
    .filter(Boolean)
    .flatMap((dir) => COMMANDS.map((command) => join(dir, command)));
  return [...(KNOWN_PATHS[process.platform] ?? []), ...onPath].find(executable) ?? null;
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
      '[dashboard] no Chrome or Chromium found (CHROME_PATH, the usual paths, PATH): the browser tests are skipped',
    );
  }
  return found;
}
