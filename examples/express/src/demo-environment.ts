/**
 * The demo's configuration, read from the environment, shared by both example servers
 * (examples/express and examples/hono):
 *
 *   PORT                             port to listen on; 0 takes a free one (the banner shows it). Default 4000
 *   HOST                             address to listen on, e.g. 127.0.0.1. Default: every interface
 *   SPENDGUARD_MASTER_KEY            the management API's credential. Default: the demo key "sk-master" (warned)
 *   DATABASE_URL                     Postgres, e.g. postgres://app:secret@db:5432/app: one store that every
 *                                    instance of the app shares. Unset: SQLite
 *   SPENDGUARD_DB                    the SQLite file when DATABASE_URL is unset; several processes on one
 *                                    machine may share it. Default: spendguard.db at the repository's root,
 *                                    whichever demo runs and from wherever
 *   SPENDGUARD_ENFORCEMENT           strict | shrink | soft (see `enforcement`). Default strict
 *   SPENDGUARD_ON_STORAGE_ERROR      deny (answer 503) | allow (serve, record the spend when storage is
 *                                    back). Default deny
 *   SPENDGUARD_STORAGE_TIMEOUT_MS    how long one storage call may take before it counts as failed. Default 2000
 *   SPENDGUARD_RESERVATION_TTL_MS    after this a reservation never settled (its process died) is charged at
 *                                    its estimate. Default 600000
 *   SPENDGUARD_RESERVATION_SWEEP_MS  how often this instance charges such reservations; 0: never. Default 30000
 *   SPENDGUARD_HEARTBEAT_GRACE_MS    after this long without a heartbeat, another instance (or this one
 *                                    restarted) charges what a dead instance left reserved; 0: off.
 *                                    Default 10000 (docs/crash-recovery.md)
 *   SPENDGUARD_KEY_CACHE_TTL_MS      how long a key is trusted from the cache when no change feed says
 *                                    otherwise (see `keyCacheTtlMs`). Default 5000
 *   LLM_BASE_URL                     an OpenAI-compatible provider. Default: the built-in simulator
 *   SIM_LATENCY_MS                   the simulator's delay before each answer. Default 0
 *   UI_USERNAME, UI_PASSWORD         the dashboard's login (at /ui). Default: admin and the master key
 *   SPENDGUARD_SEED_CALLS            how many calls `--seed` writes. Default 100000
 *
 * Command line: `--seed` (or `--seed=N`) fills the store with a realistic data set first (20 teams, 200
 * users, their keys and budgets, N calls over the last 90 days; packages/seed), unless it holds data
 * already; `--seed --replace` replaces what it holds. Either way the banner then names a seeded key that
 * has budget left, with a curl line to call with it. `pnpm demo --seed`.
 */
import { isAbsolute, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AdapterOptions, SpendGuard, SpendGuardOptions } from '@spendguard/core';
import { type Simulator, startSimulator } from '@spendguard/core/testing';

/** The demos' SQLite file: one place for both, wherever they are started from (the repository's root). */
export const DEFAULT_DEMO_DB = fileURLToPath(new URL('../../../spendguard.db', import.meta.url));

export interface DemoEnvironment {
  port: number;
  host: string | undefined;
  masterKey: string;
  guardOptions: Omit<AdapterOptions, 'storage' | 'masterKey'>;
  storage: SpendGuardOptions['storage'];
  providerBaseUrl: string;
  simulator: Simulator | null;
  /** Connects and migrates now, so that a wrong DATABASE_URL shows at start rather than as a 503 later. */
  connect(guard: SpendGuard | null): Promise<void>;
  /** The start-up banner, once listening on `port`. */
  announce(port: number): void;
  /** Exits with a message a person can act on when the server cannot listen (a taken port). */
  listenFailed(error: NodeJS.ErrnoException): never;
}

function fail(message: string): never {
  console.error(`[demo] ${message}`);
  process.exit(1);
}

function envChoice<T extends string>(name: string, choices: readonly T[]): T | undefined {
  const value = process.env[name];
  if (!value) return undefined;
  if (!(choices as readonly string[]).includes(value))
    fail(`${name} must be one of ${choices.join(', ')}; got '${value}'`);
  return value as T;
}

function envMs(name: string): number | undefined {
  const value = process.env[name];
  if (!value) return undefined;
  const ms = Number(value);
  if (!Number.isSafeInteger(ms) || ms < 0)
    fail(`${name} must be a whole number of milliseconds; got '${value}'`);
  return ms;
}

/** Reads the environment (exiting with a clear message on a bad value) and starts the simulator. */
export async function demoEnvironment(): Promise<DemoEnvironment> {
  const seedCalls = seedRequest();
  const replace = process.argv.slice(2).includes('--replace');
  if (replace && seedCalls === null) fail('--replace goes with --seed: `pnpm demo --seed --replace`');
  const port = envMs('PORT') ?? 4000;
  const host = process.env.HOST || undefined;
  let masterKey = process.env.SPENDGUARD_MASTER_KEY;
  if (!masterKey) {
    masterKey = 'sk-master';
    console.warn(
      '[demo] SPENDGUARD_MASTER_KEY is not set: using the demo master key "sk-master". Never do this in production.',
    );
  }
  const guardOptions: Omit<AdapterOptions, 'storage' | 'masterKey'> = {
    enforcement: envChoice('SPENDGUARD_ENFORCEMENT', ['strict', 'shrink', 'soft'] as const),
    onStorageError: envChoice('SPENDGUARD_ON_STORAGE_ERROR', ['deny', 'allow'] as const),
    storageTimeoutMs: envMs('SPENDGUARD_STORAGE_TIMEOUT_MS'),
    reservationTtlMs: envMs('SPENDGUARD_RESERVATION_TTL_MS'),
    reservationSweepMs: envMs('SPENDGUARD_RESERVATION_SWEEP_MS'),
    heartbeatGraceMs: envMs('SPENDGUARD_HEARTBEAT_GRACE_MS'),
    keyCacheTtlMs: envMs('SPENDGUARD_KEY_CACHE_TTL_MS'),
    dashboard: {
      username: process.env.UI_USERNAME || undefined,
      password: process.env.UI_PASSWORD || undefined,
    },
  };

  // Postgres when DATABASE_URL is set (every instance of the app shares it), else a SQLite file.
  const databaseUrl = process.env.DATABASE_URL || undefined;
  const sqlitePath = process.env.SPENDGUARD_DB || DEFAULT_DEMO_DB;
  let storage: SpendGuardOptions['storage'];
  let storageLabel: string;
  if (databaseUrl) {
    const { pgStorage } = await import('@spendguard/storage-pg');
    storage = pgStorage({ connectionString: databaseUrl });
    storageLabel = `${redactPassword(databaseUrl)} (Postgres)`;
  } else {
    const { sqliteStorage } = await import('@spendguard/storage-sqlite');
    storage = sqliteStorage({ path: sqlitePath });
    storageLabel = `${shownPath(sqlitePath)} (SQLite)`;
  }

  const seeded = seedCalls === null ? null : await seedDemo(seedCalls, replace, databaseUrl, sqlitePath);
  let roomyKey: RoomyKey | null = null;

  // The demo's LLM provider: the built-in simulator (OpenAI wire format, streaming included), unless
  // LLM_BASE_URL points at a real OpenAI-compatible endpoint.
  const simulator = process.env.LLM_BASE_URL
    ? null
    : await startSimulator({ latencyMs: envMs('SIM_LATENCY_MS') ?? 0 });
  const providerBaseUrl = process.env.LLM_BASE_URL ?? simulator!.url;
  return {
    port,
    host,
    masterKey,
    guardOptions,
    storage,
    providerBaseUrl,
    simulator,
    async connect(guard) {
      const connected = await guard?.storage().then(
        () => true,
        (error: Error) => {
          console.error(
            `[demo] storage is not reachable yet (${error.message}): guarded calls are ${guardOptions.onStorageError === 'allow' ? 'served and recorded once it is' : 'answered 503 until it is'}`,
          );
          return false;
        },
      );
      if (seeded && guard && connected) roomyKey = await findRoomyKey(guard, seeded);
    },
    announce(actualPort) {
      // One write, so that whoever reads the output gets the banner whole.
      const lines = [
        `spendguard demo on http://${host ?? 'localhost'}:${actualPort}`,
        `  provider: ${providerBaseUrl}${simulator ? ' (built-in simulator)' : ''}`,
        `  storage:  ${storageLabel}`,
        `  dashboard: http://localhost:${actualPort}/ui (user ${process.env.UI_USERNAME || 'admin'}, password ${process.env.UI_PASSWORD ? 'from UI_PASSWORD' : 'the master key'})`,
        `  try:      curl -X POST http://localhost:${actualPort}/team/new -H "Authorization: Bearer ${masterKey === 'sk-master' ? 'sk-master' : '<master key>'}" -d '{"team_alias": "frontend-team", "max_budget": 1000}'`,
      ];
      if (seeded && roomyKey) {
        const room =
          roomyKey.room === null
            ? 'no cap on its budgets'
            : `$${roomyKey.room.toFixed(2)} left on its tightest budget`;
        lines.push(
          `[demo] a seeded key to call with: ${roomyKey.key} (${room})`,
          `  curl http://localhost:${actualPort}/v1/chat/completions -H "Authorization: Bearer ${roomyKey.key}" -d '{"model": "${roomyKey.model}", "messages": [{"role": "user", "content": "hi"}]}'`,
        );
      } else if (seeded) {
        lines.push('[demo] no seeded key with budget left was found: generate one with /key/generate');
      }
      console.log(lines.join('\n'));
    },
    listenFailed(error) {
      if (error.code === 'EADDRINUSE') {
        fail(
          `port ${port} is taken (another demo, or another server, is running on it). Stop it, or start ` +
            `this demo on another port, e.g. PORT=${port + 1} pnpm demo (PORT=0 takes any free port)`,
        );
      }
      if (error.code === 'EACCES') fail(`not allowed to listen on port ${port}; try PORT=4000 or PORT=0`);
      fail(`cannot listen on ${host ?? 'every interface'}:${port}: ${error.message}`);
    },
  };
}

/** `--seed`, `--seed=N` or `--seed N` on the command line: how many calls to seed; `null` without. */
function seedRequest(): number | null {
  const args = process.argv.slice(2);
  const at = args.findIndex((a) => a === '--seed' || a.startsWith('--seed='));
  if (at < 0) return null;
  const arg = args[at]!;
  const given = arg.includes('=')
    ? arg.slice(arg.indexOf('=') + 1)
    : /^\d[\d_]*$/.test(args[at + 1] ?? '')
      ? args[at + 1]
      : undefined;
  const value = given ?? process.env.SPENDGUARD_SEED_CALLS ?? '100000';
  const calls = Number(value.replaceAll('_', ''));
  if (!Number.isSafeInteger(calls) || calls < 0)
    fail(`--seed takes a number of calls, e.g. --seed=100000; got '${value}'`);
  return calls;
}

interface SeededStore {
  /** The seeded keys in clear text, in the seed's order (only their hashes are stored). */
  keys: string[];
}

/**
 * Seeds the demo's store with `calls` calls ending now. A store that holds data already is left as it
 * is (its seeded keys, if it has them, still work), unless `replace`: then everything in it is deleted
 * first. The same answer whatever the store holds: say what was done, and how to replace it.
 */
async function seedDemo(
  calls: number,
  replace: boolean,
  databaseUrl: string | undefined,
  sqlitePath: string,
): Promise<SeededStore> {
  const { buildSeedPlan, seedPg, seedSqlite } = await import('@spendguard/seed');
  const options = { calls, days: 90, end: new Date() };
  const write = { ifNotEmpty: replace ? ('replace' as const) : ('skip' as const) };
  console.log(
    `[demo] seeding ${calls} calls over the last 90 days${replace ? ', replacing what the store held' : ''}...`,
  );
  const result = databaseUrl
    ? await seedPg({ connectionString: databaseUrl }, options, write)
    : await seedSqlite(sqlitePath, options, write);
  const plan = buildSeedPlan(options);
  const where = databaseUrl ? 'the Postgres store' : shownPath(sqlitePath);
  if (result.reused) {
    console.log(
      `[demo] ${where} holds data already: not seeded. To replace what it holds with ${calls} fresh calls: pnpm demo --seed${calls === 100_000 ? '' : `=${calls}`} --replace`,
    );
  } else {
    console.log(
      `[demo] seeded ${calls} calls, ${plan.teams.length} teams, 200 users and ${plan.keys.length} keys in ${(result.ms / 1000).toFixed(1)} s`,
    );
  }
  return { keys: plan.keys.map((k) => k.key) };
}

interface RoomyKey {
  key: string;
  model: string;
  /** USD left on the tightest capped budget of its chain (key, user, team); `null`: none is capped. */
  room: number | null;
}

/**
 * A seeded key that a call can be made with now: in the store, not blocked, and with at least $1 left
 * on every capped budget of its chain (some seeded budgets are over their cap, on purpose). Read from
 * the store, so it holds whether this run seeded it or an earlier one did.
 */
async function findRoomyKey(guard: SpendGuard, seeded: SeededStore): Promise<RoomyKey | null> {
  for (const secret of seeded.keys) {
    const key = await guard.keys.get(secret);
    if (!key || key.blocked || (key.expiresAt && key.expiresAt.getTime() <= Date.now())) continue;
    const chain = [
      key.budget,
      key.userId ? (await guard.users.get(key.userId))?.budget : null,
      key.teamId ? (await guard.teams.get(key.teamId))?.budget : null,
    ];
    const room = Math.min(...chain.map((b) => b?.remaining ?? Number.POSITIVE_INFINITY));
    if (room < 1) continue;
    const model =
      key.models.length === 0 || key.models.includes('gpt-4o-mini') ? 'gpt-4o-mini' : key.models[0]!;
    return { key: secret, model, room: Number.isFinite(room) ? room : null };
  }
  return null;
}

/** A path as the banner shows it: relative to where the demo was started, when it is below it. */
function shownPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? `./${rel}` : path;
}

/** The URL as it may be printed: without its password. */
function redactPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'DATABASE_URL';
  }
}
