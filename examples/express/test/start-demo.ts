import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
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
  // Waits for the banner, or the exit, on the child's own events (the hook's timeout bounds it).
  const port = await new Promise<string>((resolve, reject) => {
    const check = () => {
      const m = BANNER.exec(demo.output);
      if (m) done(() => resolve(m[1]!));
    };
    // On exit, what it printed last is read first: its stdout ends (tsx's esbuild service may keep
    // stderr open, so not that one), then one more turn for stderr's last chunk.
    const exit = () => {
      const ended = server.stdout!.readableEnded ? Promise.resolve() : once(server.stdout!, 'end');
      void ended
        .then(() => new Promise((r) => setImmediate(r)))
        .then(() => done(() => reject(new Error(`demo exited: ${demo.output}`))));
    };
    const done = (settle: () => void) => {
      server.stdout!.off('data', check);
      server.stderr!.off('data', check);
      server.off('exit', exit);
      settle();
    };
    // Added after the listeners that append to `output`, so each chunk is in it when checked.
    server.stdout!.on('data', check);
    server.stderr!.on('data', check);
    server.once('exit', exit);
    check();
  });
  demo.base = `http://127.0.0.1:${port}`;
  return demo;
}

/** Waits for the demo to exit (SIGTERM: it writes pending settlements first); its exit code. */
export async function stopDemo(server: ChildProcess): Promise<number | null> {
  if (server.exitCode !== null) return server.exitCode;
  server.kill('SIGTERM');
  return new Promise((resolve) => server.once('exit', (code) => resolve(code)));
}
