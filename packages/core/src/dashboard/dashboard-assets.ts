import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/** The dashboard's browser bundle: `app.js` and `app.css` (the front-end in packages/core/ui). */
export interface DashboardAssets {
  'app.js': Uint8Array;
  'app.css': Uint8Array;
  /** A hash of both files: the pages ask for `assets/app.js?v=<version>`, which browsers may cache. */
  version: string;
}

function withVersion(js: Uint8Array, css: Uint8Array): DashboardAssets {
  const version = createHash('sha256').update(js).update(css).digest('hex').slice(0, 16);
  return { 'app.js': js, 'app.css': css, version };
}

let loading: Promise<DashboardAssets> | null = null;

/**
 * The bundle, read once per process. A built package ships it in `dist/ui/` (tsup builds it with the
 * rest of the package). Run from source (tests, `pnpm demo`, a fresh clone with no build), there is
 * no `dist`: then esbuild (a dev dependency) bundles `ui/app.ts` in memory on first use, so nothing
 * has to be built by hand and nothing is written to disk.
 */
export function loadDashboardAssets(): Promise<DashboardAssets> {
  loading ??= load().catch((error: unknown) => {
    loading = null;
    throw error;
  });
  return loading;
}

async function load(): Promise<DashboardAssets> {
  // In dist, this module is bundled into dist/*.js, next to dist/ui/.
  const built = new URL('./ui/', import.meta.url);
  if (existsSync(fileURLToPath(new URL('app.js', built)))) {
    const [js, css] = await Promise.all([
      readFile(new URL('app.js', built)),
      readFile(new URL('app.css', built)),
    ]);
    return withVersion(js, css);
  }
  // From source: this file is src/dashboard/dashboard-assets.ts, the front-end is ui/app.ts.
  const entry = fileURLToPath(new URL('../../ui/app.ts', import.meta.url));
  if (!existsSync(entry)) {
    throw new Error(
      `spendguard: the dashboard bundle is missing (${fileURLToPath(built)}app.js); rebuild @spendguard/core`,
    );
  }
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    ...dashboardBuildOptions(),
    entryPoints: [entry],
    write: false,
    outdir: '/ui',
  });
  const out = (name: string) => {
    const file = result.outputFiles.find((f) => f.path.endsWith(`/${name}`));
    if (!file) throw new Error(`spendguard: esbuild produced no ${name} for the dashboard`);
    return file.contents;
  };
  return withVersion(out('app.js'), out('app.css'));
}

/** The esbuild options of the browser bundle; tsup.config.ts uses the same. */
export function dashboardBuildOptions() {
  return {
    bundle: true,
    format: 'iife' as const,
    platform: 'browser' as const,
    target: ['chrome110', 'firefox110', 'safari16'],
    minify: true,
    legalComments: 'none' as const,
    logLevel: 'silent' as const,
  };
}
