/**
 * µs per request (one reserve + one settle on key, user and team, two tags) against a real file,
 * with MemoryStorage alternated in the same run as the yardstick. Not a test: these machines are
 * noisy, so read the medians and the ratio.
 *
 *   node --conditions=spendguard-source --import tsx packages/storage-sqlite/bench/reserve-settle.ts
 *
 * BENCH_DIR=/dev/shm puts the file on tmpfs, to see the CPU cost without the disk's.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStorage } from '@spendguard/core';
import { sqliteStorage } from '../src/index.js';
import { batch, median, seed } from './workload.js';

const BATCH = 5000;
const ROUNDS = 7;
const dir = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), 'spendguard-bench-'));
const sqlite = sqliteStorage({ path: join(dir, 'bench.db') });
const memory = new MemoryStorage();
await sqlite.init();
await seed(sqlite);
await seed(memory);
await batch(sqlite, BATCH);
await batch(memory, BATCH);
const times = { sqlite: [] as number[], memory: [] as number[] };
for (let r = 0; r < ROUNDS; r++) {
  times.sqlite.push(await batch(sqlite, BATCH));
  times.memory.push(await batch(memory, BATCH));
}
const [sq, mem] = [median(times.sqlite), median(times.memory)];
console.log(
  `sqlite: ${sq.toFixed(1)} µs per reserve+settle (median of ${ROUNDS} x ${BATCH}; rounds ${times.sqlite.map((t) => t.toFixed(1)).join(' ')})`,
);
console.log(`memory: ${mem.toFixed(1)} µs; sqlite / memory = ${(sq / mem).toFixed(1)}x`);
await sqlite.close();
rmSync(dir, { recursive: true, force: true });
