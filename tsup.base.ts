import type { Options } from 'tsup';

/**
 * What every publishable package builds: ESM (`.js`, `.d.ts`) and CommonJS (`.cjs`, `.d.cts`) for
 * Node 20+. Splitting in both formats keeps one copy of each module per format, so that entry points of
 * one package share their classes (`instanceof`) and module state (the call context of `track()`).
 * `shims` gives the CommonJS build an `import.meta.url`, which the packages use to find the files
 * they ship (price snapshot, dashboard bundle, migrations). The declarations are built against the
 * other packages' built declarations, not their sources (no `spendguard-source` condition): they then
 * import `@spendguard/core` rather than inline it, and the build reads a few .d.ts files instead of
 * type-checking the core's sources once more per package. So the core builds first (`pnpm -r` builds
 * in dependency order).
 */
export function packageBuild(entry: Record<string, string>, more: Options = {}): Options {
  return {
    entry,
    format: ['esm', 'cjs'],
    dts: { compilerOptions: { customConditions: [] } },
    clean: true,
    target: 'node20',
    splitting: true,
    shims: true,
    ...more,
  };
}
