import { copyFileSync } from 'node:fs';
import { build } from 'esbuild';
import { defineConfig } from 'tsup';
import { dashboardBuildOptions } from './src/dashboard/dashboard-assets.js';

export default defineConfig({
  entry: { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts' },
  format: ['esm'],
  dts: true,
  clean: true,
  target: 'node20',
  // esbuild is only imported when running from source without a built dashboard bundle.
  external: ['vitest', 'esbuild'],
  loader: { '.json': 'copy' },
  // The price snapshot is read at run time (readFileSync relative to import.meta.url, on first use), not
  // imported, so esbuild and its '.json' copy loader never see it: put it next to the bundles ourselves.
  // The dashboard's browser bundle (ui/app.ts, uPlot and the CSS) ships as dist/ui/app.js and app.css.
  async onSuccess() {
    copyFileSync('src/pricing/snapshot.json', 'dist/snapshot.json');
    await build({ ...dashboardBuildOptions(), entryPoints: ['ui/app.ts'], outdir: 'dist/ui' });
  },
});
