import { spawnSync } from 'node:child_process';
import {
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createBrotliDecompress } from 'node:zlib';

/**
 * A Chromium from the npm registry, for machines that have none (only Node and npm): the build that
 * `@sparticuz/chromium` ships brotli-compressed, with the few shared libraries it needs (NSS) and a
 * font, unpacked once into node_modules/.cache and started through a small shell wrapper that points
 * the loader and fontconfig at them. Linux x64 only (that is what the package holds).
 */
const here = dirname(fileURLToPath(import.meta.url));
export const BUNDLED_DIR = resolve(here, '..', '..', '..', 'node_modules', '.cache', 'spendguard-chromium');
export const BUNDLED_CHROME = join(BUNDLED_DIR, 'chrome');

/** Whether the bundled browser is asked for, or is the only way this machine can have one. */
export function bundledChromiumApplies(): boolean {
  return process.platform === 'linux' && process.arch === 'x64';
}

function packageBin(): { bin: string; version: string } {
  const require = createRequire(join(here, '..', 'package.json'));
  const main = require.resolve('@sparticuz/chromium');
  // main is <package>/build/cjs/index.cjs
  const root = resolve(dirname(main), '..', '..');
  const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  return { bin: join(root, 'bin'), version };
}

async function unbrotli(from: string, to: string): Promise<void> {
  await pipeline(createReadStream(from), createBrotliDecompress(), createWriteStream(to));
}

function untar(tarFile: string, into: string): void {
  mkdirSync(into, { recursive: true });
  const run = spawnSync('tar', ['-xf', tarFile, '-C', into], { stdio: 'inherit' });
  if (run.status !== 0) throw new Error(`tar -xf ${tarFile} failed (exit ${run.status})`);
}

/**
 * Unpacks the bundled Chromium when it is not unpacked yet (a few seconds, once per install) and
 * returns the wrapper to launch. Called once per test run, from vitest's global setup
 * (tests/dashboard/test/browser-setup.ts), before any test file starts.
 */
export async function ensureBundledChromium(): Promise<string> {
  const { bin, version } = packageBin();
  const stamp = join(BUNDLED_DIR, 'version');
  const wanted = `${version} wrapper 2`;
  if (existsSync(BUNDLED_CHROME) && existsSync(stamp) && readFileSync(stamp, 'utf8') === wanted) {
    return BUNDLED_CHROME;
  }
  const work = `${BUNDLED_DIR}.${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  await unbrotli(join(bin, 'chromium.br'), join(work, 'chromium'));
  spawnSync('chmod', ['0755', join(work, 'chromium')]);
  for (const part of ['al2023', 'fonts', 'swiftshader']) {
    const tar = join(work, `${part}.tar`);
    await unbrotli(join(bin, `${part}.tar.br`), tar);
    untar(tar, join(work, part));
    rmSync(tar);
  }
  // The package's fonts.conf names Lambda's paths; ours names the unpacked font and the system's.
  writeFileSync(
    join(work, 'fonts', 'fonts.conf'),
    `<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n  <dir>${BUNDLED_DIR}/fonts/fonts</dir>\n  <dir>/usr/share/fonts</dir>\n  <cachedir>${BUNDLED_DIR}/fonts-cache</cachedir>\n</fontconfig>\n`,
  );
  writeFileSync(
    join(work, 'chrome'),
    [
      '#!/bin/sh',
      '# Starts the Chromium unpacked from @sparticuz/chromium with its own NSS libraries and fonts.',
      `dir='${BUNDLED_DIR}'`,
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, not a template
      'export LD_LIBRARY_PATH="$dir/al2023/lib:$dir/swiftshader${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"',
      'export FONTCONFIG_PATH="$dir/fonts"',
      "# Under LANG=C this build's ICU takes the locale as en-US@posix, which its Intl refuses at the first use.",
      'export LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8',
      'exec "$dir/chromium" "$@"',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  writeFileSync(join(work, 'version'), wanted);
  rmSync(BUNDLED_DIR, { recursive: true, force: true });
  try {
    renameSync(work, BUNDLED_DIR);
  } catch (error) {
    // Another process put its copy in place first: use that one.
    rmSync(work, { recursive: true, force: true });
    if (!existsSync(BUNDLED_CHROME)) throw error;
  }
  return BUNDLED_CHROME;
}
