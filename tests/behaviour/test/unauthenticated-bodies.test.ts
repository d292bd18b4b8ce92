import { type ChildProcess, fork } from 'node:child_process';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const MB = 1024 * 1024;
const CONCURRENT = 150;
const BODY = Buffer.alloc(10 * MB, 0x20); // one buffer, sent by every request: the client costs 10 MB
const SERVER = fileURLToPath(new URL('./memory-server.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The next IPC message from the child that has `field`. */
function next<T>(child: ChildProcess, field: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: Record<string, unknown>) => {
      if (!(field in m)) return;
      child.off('message', onMessage).off('exit', onExit);
      resolve(m as T);
    };
    const onExit = (code: number | null) => reject(new Error(`the server process exited (${code})`));
    child.on('message', onMessage).once('exit', onExit);
  });
}

/** POSTs a 10 MB body without a key; resolves with the status once the request is over either way. */
function unauthenticated(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    let status = 0;
    const req = request({
      host: '127.0.0.1',
      port,
      path,
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': BODY.length },
    });
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      res.resume();
    });
    // The server may close once it has answered (Hono drains at most 64 MB): the answer counts.
    req.on('error', () => {});
    req.on('close', () => resolve(status));
    req.end(BODY);
  });
}

describe('resident memory under concurrent unauthenticated 10 MB bodies', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill();
    child = undefined;
  });

  it.each(['express', 'hono'])(
    '%s: 150 bodies at once, all refused 401, leave the server under +64 MB',
    async (framework) => {
      child = fork(SERVER, [framework], {
        cwd: ROOT,
        execArgv: ['--conditions=spendguard-source', '--import', 'tsx', '--expose-gc'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const { port } = await next<{ port: number }>(child, 'port');
      // Warm up each path once (lazy modules, JIT), so the baseline is the server at work.
      await Promise.all([unauthenticated(port, '/v1/chat/completions'), unauthenticated(port, '/team/new')]);
      child.send('start');
      const { baseline, maxRssBefore } = await next<{ baseline: number; maxRssBefore: number }>(
        child,
        'baseline',
      );
      const statuses = await Promise.all(
        Array.from({ length: CONCURRENT }, (_, i) =>
          unauthenticated(port, i % 3 === 2 ? '/key/generate' : '/v1/chat/completions'),
        ),
      );
      child.send('stop');
      const { peak, maxRssAfter, after, answered } = await next<{
        peak: number;
        maxRssAfter: number;
        after: number;
        answered: Record<string, number>;
      }>(child, 'peak');
      // The kernel's high-water mark: if the load raised it, that is the load's true peak.
      const truePeak = maxRssAfter > maxRssBefore ? Math.max(peak, maxRssAfter) : peak;
      console.log(
        `${framework}: ${CONCURRENT} x 10 MB unauthenticated: baseline ${(baseline / MB).toFixed(1)} MB, ` +
          `peak +${((truePeak - baseline) / MB).toFixed(1)} MB, after +${((after - baseline) / MB).toFixed(1)} MB; ` +
          `${statuses.filter((s) => s === 401).length} clients read their 401`,
      );
      // Every request answered 401 by the server; a client saw that answer or lost it to the closed
      // connection (status 0), never another one.
      expect(answered).toEqual({ 401: CONCURRENT });
      expect(statuses.filter((s) => s !== 401 && s !== 0)).toEqual([]);
      expect(truePeak - baseline).toBeLessThan(64 * MB);
      child.send('exit');
    },
    120_000,
  );
});
