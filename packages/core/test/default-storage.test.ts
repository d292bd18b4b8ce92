import { MemoryStorage, type SpendGuard } from '@spendguard/core';
import { type GuardResponse, resolveAdapterOptions } from '@spendguard/core/adapter';
import { describe, expect, it } from 'vitest';

const MISSING =
  'spendguard: no `storage` option was given and @spendguard/storage-sqlite (the embedded default) is not ' +
  'installed. Install it (npm install @spendguard/storage-sqlite), or pass a storage, e.g. ' +
  '`storage: pgStorage({ connectionString: process.env.DATABASE_URL })` from @spendguard/storage-pg.';

// The errors Node raises when a package is not installed, as `import()` (ESM) and `require` (CommonJS,
// where esbuild's build turns the adapter's import() into a require) raise them.
const notInstalledEsm = Object.assign(
  new Error(
    "Cannot find package '@spendguard/storage-sqlite' imported from /srv/app/node_modules/@spendguard/express/dist/index.js",
  ),
  { code: 'ERR_MODULE_NOT_FOUND' },
);
const notInstalledCjs = Object.assign(
  new Error(
    "Cannot find module '@spendguard/storage-sqlite'\nRequire stack:\n- /srv/app/node_modules/@spendguard/express/dist/index.cjs",
  ),
  { code: 'MODULE_NOT_FOUND' },
);

function guardWith(load: () => Promise<never>) {
  const errors: string[] = [];
  const { guard } = resolveAdapterOptions(
    { masterKey: 'sk-master-test', logger: { warn() {}, error: (message) => errors.push(message) } },
    load,
  );
  return { guard, errors };
}

async function call(guard: SpendGuard): Promise<GuardResponse> {
  const outcome = await guard.admit({
    method: 'POST',
    path: '/v1/chat/completions',
    header: (name) => (name.toLowerCase() === 'authorization' ? 'Bearer sk-some-virtual-key' : undefined),
    body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 },
  });
  if (outcome.ok) throw new Error('the call was admitted without any storage');
  return outcome.response;
}

describe('the adapters’ default storage, an optional peer', () => {
  it.each([
    ['import()', notInstalledEsm],
    ['require', notInstalledCjs],
  ])(
    'not installed (%s): every guarded call answers 503 naming the package, logged at start-up',
    async (_, error) => {
      const { guard, errors } = guardWith(() => Promise.reject(error));
      for (let i = 0; i < 2; i++) {
        const response = await call(guard);
        expect(response.status).toBe(503);
        expect(response.body).toEqual({
          error: { message: MISSING, type: 'service_unavailable', param: null, code: '503' },
        });
      }
      expect(errors[0]).toBe(MISSING);
    },
  );

  it('installed but failing to load (a native addon not built): 503 with what failed', async () => {
    const { guard } = guardWith(() =>
      Promise.reject(new Error('Could not locate the bindings file. Tried: build/better_sqlite3.node')),
    );
    const response = await call(guard);
    expect(response.status).toBe(503);
    expect((response.body as { error: { message: string } }).error.message).toBe(
      'spendguard: the default storage @spendguard/storage-sqlite failed to load: Could not locate the bindings file. Tried: build/better_sqlite3.node',
    );
  });

  it('another missing package is not reported as the default storage', async () => {
    const other = Object.assign(new Error("Cannot find package 'drizzle-orm' imported from /srv/x.js"), {
      code: 'ERR_MODULE_NOT_FOUND',
    });
    const response = await call(guardWith(() => Promise.reject(other)).guard);
    expect((response.body as { error: { message: string } }).error.message).toBe(
      "spendguard: the default storage @spendguard/storage-sqlite failed to load: Cannot find package 'drizzle-orm' imported from /srv/x.js",
    );
  });

  it('is not loaded at all when a storage is given', () => {
    let loads = 0;
    resolveAdapterOptions({ masterKey: 'sk-master-test', storage: new MemoryStorage() }, () => {
      loads++;
      return Promise.reject(notInstalledEsm);
    });
    expect(loads).toBe(0);
  });
});
