import { copyFileSync } from 'node:fs';
import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts' },
  format: ['esm'],
  dts: true,
  clean: true,
  target: 'node20',
  external: ['vitest'],
  loader: { '.json': 'copy' },
  // The price snapshot is read at run time (readFileSync relative to import.meta.url, on first use), not
  // imported, so esbuild and its '.json' copy loader never see it: put it next to the bundles ourselves.
  async onSuccess() {
    copyFileSync('src/pricing/snapshot.json', 'dist/snapshot.json');
  },
});
