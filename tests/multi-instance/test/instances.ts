/**
 * The example servers as separate processes, started the way a user starts them
 * (`node --conditions=spendguard-source --import tsx examples/<framework>/src/server.ts`), on loopback,
 * configured by environment variables only. Every process started here is killed when the test that
 * started it ends (`stopAllInstances()` in an `afterEach`) or, failing that, when this process exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { onTestFailed } from 'vitest';

export const MASTER = 'sk-multi-instance-master';
const EXAMPLES = join(import.meta.dirname, '..', '..', '..', 'examples');

export type Framework = 'express' | 'hono';

export interface Instance {
  readonly name: string;
  readonly url: string;
  readonly child: ChildProcess;
  /** What it printed so far (stdout and stderr). */
  output(): string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<void>;
  /** SIGTERM (graceful: pending settlements are written), then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

const alive = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of alive) child.kill('SIGKILL');
});

/**
 * Starts one example server on a free loopback port and resolves once it listens. `env` is its whole
 * spendguard configuration: the parent's DATABASE_URL / SPENDGUARD_* variables are not passed on.
 */
export async function startInstance(
  name: string,
  framework: Framework,
  env: Record<string, string>,
  startTimeoutMs = 30_000,
): Promise<Instance> {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) =>
        !k.startsWith('SPENDGUARD_') && !['DATABASE_URL', 'LLM_BASE_URL', 'SIM_LATENCY_MS'].includes(k),
    ),
  );
  const child = spawn(
    process.execPath,
    ['--conditions=spendguard-source', '--import', 'tsx', 'src/server.ts'],
    {
      cwd: join(EXAMPLES, framework),
      env: { ...inherited, PORT: '0', HOST: '127.0.0.1', SPENDGUARD_MASTER_KEY: MASTER, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  alive.add(child);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      alive.delete(child);
      resolve();
    });
  });
  let output = '';
  // When the test fails, what the instance printed tells why.
  onTestFailed(() => {
    console.error(`--- ${name} (${framework}) printed:\n${output.slice(-6000)}`);
  });
  child.stdout!.on('data', (d) => {
    output += d;
  });
  child.stderr!.on('data', (d) => {
    output += d;
  });
  // Waits for the start-up banner (or the exit, or the time limit), on the child's own events.
  const BANNER = /spendguard demo on http:\/\/127\.0\.0\.1:(\d+)/;
  const port = await new Promise<string>((resolve, reject) => {
    const check = () => {
      const m = BANNER.exec(output);
      if (m) done(() => resolve(m[1]!));
    };
    const exit = () =>
      done(() => reject(new Error(`${name} (${framework}) exited before listening:\n${output}`)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done(() =>
        reject(new Error(`${name} (${framework}) did not listen within ${startTimeoutMs} ms:\n${output}`)),
      );
    }, startTimeoutMs);
    const done = (settle: () => void) => {
      clearTimeout(timer);
      child.stdout!.off('data', check);
      child.stderr!.off('data', check);
      child.off('exit', exit);
      settle();
    };
    // After the listeners above that append to `output`, so each chunk is in it when checked.
    child.stdout!.on('data', check);
    child.stderr!.on('data', check);
    child.once('exit', exit);
    check();
  });
  return {
    name: `${name} (${framework})`,
    url: `http://127.0.0.1:${port}`,
    child,
    output: () => output,
    exited,
    async stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The Postgres `application_name` instance `index` connects with: how a test finds its backends. */
export function applicationNameOf(index: number): string {
  return `spendguard-instance-${index}`;
}

function withApplicationName(env: Record<string, string>, index: number): Record<string, string> {
  if (!env.DATABASE_URL) return env;
  const url = new URL(env.DATABASE_URL);
  url.searchParams.set('application_name', applicationNameOf(index));
  return { ...env, DATABASE_URL: url.toString() };
}

/** Starts `count` instances at once, alternating Express and Hono, with the same environment. */
export async function startInstances(count: number, env: Record<string, string>): Promise<Instance[]> {
  const started = await Promise.allSettled(
    Array.from({ length: count }, (_, i) =>
      startInstance(`instance ${i}`, i % 2 === 0 ? 'express' : 'hono', withApplicationName(env, i)),
    ),
  );
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return started.map((s) => (s as PromiseFulfilledResult<Instance>).value);
}

/** Stops every instance still running: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopAllInstances(graceMs = 10_000): Promise<void> {
  await Promise.all(
    [...alive].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), graceMs).unref();
        }),
    ),
  );
}
