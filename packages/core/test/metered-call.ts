import { createSpendGuard, MemoryStorage, type SpendGuard } from '@spendguard/core';
import { type Simulator, startSimulator } from '@spendguard/core/testing';
import { afterAll, beforeAll } from 'vitest';

// A guard on a MemoryStorage and a simulator, and one call metered through the guard's tap as an
// adapter would, for the metering tests (one set per test file, each file in its own process).

export const MASTER = 'sk-master-metering-test';
/** The usage every metered call reports (the simulator's header), unless the test says otherwise. */
export const USAGE = {
  prompt_tokens: 1200,
  completion_tokens: 90,
  cached_tokens: 300,
  cache_write_tokens: 200,
  cache_write_1h_tokens: 100,
  reasoning_tokens: 40,
};

export interface MeteringBench {
  simulator: Simulator;
  storage: MemoryStorage;
  guard: SpendGuard;
}

/** Starts the simulator and the guard before the file's tests, and stops them after. */
export function meteringBench(): MeteringBench {
  const bench = {} as MeteringBench;
  beforeAll(async () => {
    bench.simulator = await startSimulator();
    bench.storage = new MemoryStorage();
    bench.guard = createSpendGuard({
      storage: bench.storage,
      masterKey: MASTER,
      callContext: true,
      logger: { warn: () => {}, error: () => {} },
    });
  });
  afterAll(async () => {
    await bench.guard.close();
    await bench.simulator.close();
  });
  return bench;
}

/** Sends `body` to the simulator and meters its answer through a guarded call, chunk by chunk. */
export async function meterThrough(
  bench: MeteringBench,
  path: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  const { guard, simulator, storage } = bench;
  const outcome = await guard.admit({
    method: 'POST',
    path: path.split('?')[0]!,
    header: (n) => (n === 'authorization' ? `Bearer ${MASTER}` : undefined),
    body,
  });
  if (!outcome.ok) throw new Error('refused');
  const call = outcome.call;
  const response = await fetch(`${simulator.origin}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-simulator-usage': JSON.stringify(USAGE), ...headers },
    body: call.rewrittenBody ?? JSON.stringify(body),
  });
  call.tap.begin(response.status, response.headers.get('content-type'));
  const sent: Buffer[] = [];
  let cut = false;
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      // Split further, so that events straddle chunks.
      for (let i = 0; i < chunk.length; i += 97) {
        const out = call.tap.write(chunk.subarray(i, i + 97));
        if (out !== null) sent.push(Buffer.from(out as Uint8Array));
      }
    }
  } catch {
    cut = true;
  }
  const rest = call.tap.drain();
  if (rest) sent.push(Buffer.from(rest));
  const record = await call.finish({ aborted: cut });
  const [log] = await storage.querySpendLogs({ requestId: record.requestId });
  return { record, text: Buffer.concat(sent).toString(), call, log: log! };
}
