import { copyFileSync } from 'node:fs';
import { build } from 'esbuild';
import { defineConfig } from 'tsup';
import { packageBuild } from '../../tsup.base.js';
import { dashboardBuildOptions } from './src/dashboard/dashboard-assets.js';

export default defineConfig(
  packageBuild(
    {
      index: 'src/index.ts',
      storage: 'src/storage/index.ts',
      adapter: 'src/adapter/index.ts',
      testing: 'src/testing/index.ts',
      conformance: 'src/testing/conformance.ts',
    },
    {
      // esbuild is only imported when running from source without a built dashboard bundle.
      external: ['vitest', 'esbuild'],
      loader: { '.json': 'copy' },
      // The price snapshot is read at run time (readFileSync relative to import.meta.url, on first use),
      // not imported, so esbuild and its '.json' copy loader never see it: put it next to the bundles
      // ourselves. The dashboard's browser bundle (ui/app.ts, uPlot and the CSS) ships as dist/ui/.
      async onSuccess() {
        copyFileSync('src/pricing/snapshot.json', 'dist/snapshot.json');
        await build({ ...dashboardBuildOptions(), entryPoints: ['ui/app.ts'], outdir: 'dist/ui' });
      },
    },
  ),
);
