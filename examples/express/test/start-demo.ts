import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';

export interface RunningDemo {
  server: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output: string;
  base: string;
}

const BANNER = /spendguard demo on http:\/\/\S+:(\d+)/;

/**
 * Starts `examples/<name>` (express or hono) as its own process, as a newcomer does, with `args` and
 * `env` over a clean environment (the demo master key, SQLite unless DATABASE_URL is passed); resolves
 * once it listens.
 */
export async function startDemo(
  name: 'express' | 'hono',
  args: string[],
  env: Record<string, string>,
): Promise<RunningDemo> {
  const server = spawn(
    process.execPath,
    ['--conditions=spendguard-source', '--import', 'tsx', 'src/server.ts', ...args],
    {
      cwd: join(import.meta.dirname, '..', '..', name),
      env: { ...process.env, PORT: '0', SPENDGUARD_MASTER_KEY: '', DATABASE_URL: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const demo: RunningDemo = { server, output: '', base: '' };
  server.stdout!.on('data', (d) => {
    demo.output += d;
  });
  server.stderr!.on('data', (d) => {
    demo.output += d;
  });
  const deadline = Date.now() + 60_000;
  while (!BANNER.test(demo.output)) {
    if (server.exitCode !== null) throw new Error(`demo exited: ${demo.output}`);
    if (Date.now() > deadline) throw new Error(`demo did not start: ${demo.output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  demo.base = `http://127.0.0.1:${BANNER.exec(demo.output)![1]}`;
  return demo;
}

/** Waits for the demo to exit (SIGTERM: it writes pending settlements first); its exit code. */
export async function stopDemo(server: ChildProcess): Promise<number | null> {
  if (server.exitCode !== null) return server.exitCode;
  server.kill('SIGTERM');
  return new Promise((resolve) => server.once('exit', (code) => resolve(code)));
}
