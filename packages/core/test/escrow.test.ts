import { describe, expect, it } from 'vitest';
import { type Draw, Escrow, type EscrowOptions } from '../src/admission/escrow.js';
import { MemoryStorage } from '../src/storage/memory-storage.js';
import type { LeaseInput, ScopeRef } from '../src/storage/storage-contract.js';

const K: ScopeRef = { kind: 'key', id: 'k1' };
const T: ScopeRef = { kind: 'team', id: 't1' };
const SCOPES = [K, T];
const KEY = Escrow.keyOf(SCOPES);
const T0 = Date.parse('2026-03-10T12:00:00.000Z');
/** A call's worst case in these tests: 1,000 nano-dollars. */
const WORST = 1_000;

/** An escrow over a real MemoryStorage, on a clock the test moves, counting the lease writes. */
async function setup(capNano: number | null, over: Partial<EscrowOptions> = {}) {
  const storage = new MemoryStorage();
  const budget = { maxBudgetNano: capNano, budgetDuration: null, budgetResetAt: null };
  await storage.insert([
    { type: 'budget', scope: K, budget },
    { type: 'budget', scope: T, budget: { ...budget, maxBudgetNano: null } },
  ]);
  const clock = { now: T0 };
  const writes: LeaseInput[] = [];
  const errors: unknown[] = [];
  const escrow = new Escrow({
    processId: 'proc-a',
    now: () => clock.now,
    write: (input) => {
      writes.push(input);
      return storage.setLease(input);
    },
    leaseMs: 1_000,
    storeTtlMs: 60_000,
    minCalls: 4,
    nearCapCalls: 8,
    leaseShare: 4,
    onError: (e) => errors.push(e),
    ...over,
  });
  const counter = async () => (await storage.getBudgets([K], new Date(clock.now)))[0]!;
  /**
   * Admits one call as the guard does: from memory, else through `acquire`; null: the call reserves
   * its own, and the escrow is shown the counters that reservation found (here: as they stand).
   */
  const admit = async (amount = WORST): Promise<Draw | null> => {
    const draw = escrow.take(KEY, amount) ?? (await escrow.acquire(KEY, SCOPES, amount, undefined));
    if (!draw) escrow.observed(KEY, await storage.getBudgets(SCOPES, new Date(clock.now)));
    return draw;
  };
  /** Settles a draw at `cost` the way the guard does: the spend written, then the draw returned. */
  const settle = async (draw: Draw, cost: number, requestId: string) => {
    const written = storage
      .settle({
        reservationId: `none-${requestId}`,
        scopes: SCOPES,
        costNano: cost,
        now: new Date(clock.now),
        log: {
          requestId,
          callType: 'acompletion',
          apiKeyHash: 'k1',
          spendNano: cost,
          promptTokens: 1,
          completionTokens: 1,
          totalTokens: 2,
          startTime: new Date(clock.now),
          endTime: new Date(clock.now),
          model: 'gpt-4o',
          provider: 'openai',
          userId: null,
          teamId: 't1',
          endUser: null,
          tags: [],
          status: 'success',
          estimated: false,
          httpStatus: 200,
          metadata: {},
        },
      })
      .then(() => true);
    escrow.settled(draw, cost, written);
    await written;
    await Promise.resolve(); // the escrow's own continuation after the write
  };
  return { storage, clock, writes, errors, escrow, counter, admit, settle };
}

describe('escrow admission', () => {
  it('leases nothing for a quiet scope set: its calls keep a reservation each', async () => {
    const { writes, admit, counter } = await setup(1_000_000);
    // minCalls 4: three calls in one window are not worth a lease.
    for (let i = 0; i < 3; i++) expect(await admit()).toBeNull();
    expect(writes).toEqual([]);
    expect(await counter()).toMatchObject({ spendNano: 0, reservedNano: 0 });
  });

  it('never leases blind: not before a reservation of its own showed the room', async () => {
    const { writes, escrow } = await setup(1_000_000);
    for (let i = 0; i < 6; i++) expect(await escrow.acquire(KEY, SCOPES, WORST, undefined)).toBeNull();
    expect(writes).toEqual([]);
  });

  it('admits a busy scope set from memory: one write for the lease, none per call', async () => {
    const { writes, admit, counter, escrow, settle, clock } = await setup(1_000_000);
    for (let i = 0; i < 3; i++) expect(await admit()).toBeNull();
    // The 4th call opens the lease: 4 calls' worst cases seen in this window, so it asks for two
    // windows of them (8,000) and gets it (the room, 1,000,000, is far from the cap: 8 x 1,000).
    const first = await admit();
    expect(first).not.toBeNull();
    expect(writes.map((w) => w.amountNano)).toEqual([8_000]);
    expect(writes[0]).toMatchObject({ processId: 'proc-a', leaseId: 'lease:proc-a:1' });
    expect(await counter()).toMatchObject({ spendNano: 0, reservedNano: 8_000 });
    // 7 more fit from memory (8 x 1,000 = 8,000), with no write.
    const draws: Draw[] = [first!];
    for (let i = 0; i < 7; i++) {
      const d = escrow.take(KEY, WORST);
      expect(d).not.toBeNull();
      draws.push(d!);
    }
    expect(escrow.take(KEY, WORST)).toBeNull(); // a 9th does not fit
    expect(writes).toHaveLength(1);
    // A call settles at 400 of its 1,000: the 600 unused are free again at once, in memory.
    await settle(draws.pop()!, 400, 'c1');
    expect(escrow.leaseOf(KEY)!.available).toBe(600);
    expect(escrow.take(KEY, 600)).not.toBeNull();
    // The store: the lease still holds its 8,000, and the settled 400 is spend.
    expect(await counter()).toMatchObject({ spendNano: 400, reservedNano: 8_000 });
    expect(clock.now).toBe(T0);
  });

  it('renews a lease in the background past half its time, and gives it back when idle', async () => {
    const { writes, admit, counter, escrow, clock, settle } = await setup(1_000_000);
    for (let i = 0; i < 3; i++) await admit();
    const d = (await admit())!;
    await settle(d, 1_000, 'c1');
    clock.now += 500; // half of leaseMs
    const renewing = escrow.take(KEY, WORST)!;
    expect(renewing).not.toBeNull(); // admitted at once, from the lease as it is
    await escrow.leaseOf(KEY)!.writing;
    // Cover (1,000 in flight) + two windows of the 5 worst cases seen (10,000).
    expect(writes.map((w) => w.amountNano)).toEqual([8_000, 11_000]);
    expect(writes[1]!.expiresAt.getTime()).toBe(T0 + 500 + 60_000);
    expect(escrow.leaseOf(KEY)!.validUntil).toBe(T0 + 1_500);
    expect(await counter()).toMatchObject({ spendNano: 1_000, reservedNano: 11_000 });
    await settle(renewing, 0, 'c2');
    // Idle for a lease time: given back whole.
    clock.now += 1_000;
    await escrow.returnIdle(1_000);
    expect(await counter()).toMatchObject({ spendNano: 1_000, reservedNano: 0 });
    expect(escrow.size).toBe(0);
  });

  it('takes no lease near the cap, and shrinks one to its calls in flight as the cap nears', async () => {
    // Cap 20,000 = 20 worst cases. A lease needs room for 8 worst cases (nearCapCalls) beyond its calls
    // in flight, and takes at most a quarter of the room (leaseShare 4), as the last write showed it.
    const { writes, admit, counter, escrow, settle, storage, clock } = await setup(20_000);
    for (let i = 0; i < 3; i++) await admit();
    const a = (await admit())!;
    expect(a).not.toBeNull();
    // Two windows of 4 worst cases (8,000), but at most a quarter of the room: 20,000 / 4.
    expect(writes.map((w) => w.amountNano)).toEqual([5_000]);
    // Another process spends 6,000 (this one hears nothing of it).
    await storage.settle({
      reservationId: 'none-x',
      scopes: [K],
      costNano: 6_000,
      now: new Date(clock.now),
      log: logOf('x', 6_000),
    });
    clock.now += 1_000; // the lease's time is up: the next call renews it
    const b = (await admit())!;
    expect(b).not.toBeNull();
    // Sized on the counters of the last write (room 20,000 with the lease given back), a in flight
    // (1,000): 1,000 + (20,000 - 1,000) / 4 = 5,750. The store then answers 6,000 spent: room 14,000 - 1,000 >= 8,000, so it admits.
    expect(writes.at(-1)!.amountNano).toBe(5_750);
    await settle(a, 1_000, 'a');
    await settle(b, 1_000, 'b');
    // 8,000 spent; the lease (5,750) has 3,750 left in memory: three more calls, no write.
    for (const id of ['c', 'd', 'e']) await settle(escrow.take(KEY, WORST)!, 1_000, id);
    expect(writes).toHaveLength(2);
    expect(await counter()).toMatchObject({ spendNano: 11_000, reservedNano: 5_750 });
    clock.now += 1_000;
    // Renewed: room 20,000 - 6,000 = 14,000 as last seen; 8,000 wanted, at most 14,000 / 4 = 3,500.
    // The store answers 11,000 spent: room 9,000 >= 8,000.
    const f = (await admit())!;
    expect(f).not.toBeNull();
    expect(writes.at(-1)!.amountNano).toBe(3_500);
    await settle(f, 1_000, 'f');
    clock.now += 1_000;
    // Room last seen 9,000: at most 2,250. The store answers 12,000 spent: room 8,000, just enough.
    const g = (await admit())!;
    expect(g).not.toBeNull();
    expect(writes.at(-1)!.amountNano).toBe(2_250);
    await settle(g, 1_000, 'g');
    clock.now += 1_000;
    // Room last seen 8,000: asks 2,000; the store answers 13,000 spent: room 7,000 < 8 worst cases.
    // The lease admits nothing and is given back whole; the call reserves its own.
    expect(await admit()).toBeNull();
    await escrow.leaseOf(KEY)?.writing;
    expect(writes.map((w) => w.amountNano).slice(-2)).toEqual([2_000, 0]);
    expect(escrow.size).toBe(0);
    expect(await counter()).toMatchObject({ spendNano: 13_000, reservedNano: 0 });
    // For a lease time after that, however busy the scope set, no lease is tried.
    for (let i = 0; i < 4; i++) expect(await admit()).toBeNull();
    expect(writes).toHaveLength(6);
  });

  it('stops admitting from memory within leaseMs of a budget lowered, on the injected clock', async () => {
    const { admit, counter, escrow, storage, clock } = await setup(1_000_000);
    for (let i = 0; i < 3; i++) await admit();
    expect(await admit()).not.toBeNull();
    // Lowered by another process (no notice reaches this one) to 5,000: 8,000 are held already.
    await storage.updateBudget(K, { maxBudgetNano: 5_000 }, new Date(clock.now));
    // Within the lease's time calls may still come from it...
    clock.now += 400;
    expect(escrow.take(KEY, WORST)).not.toBeNull();
    // ...past half of it the next call renews; the renewal sees the cap and admits nothing more.
    clock.now += 200;
    const last = escrow.take(KEY, WORST);
    expect(last).not.toBeNull(); // from the lease granted 600 ms ago; the renewal starts now
    await escrow.leaseOf(KEY)!.writing;
    expect(escrow.take(KEY, WORST)).toBeNull();
    clock.now = T0 + 1_000;
    expect(escrow.take(KEY, WORST)).toBeNull();
    expect(await escrow.acquire(KEY, SCOPES, WORST, undefined)).toBeNull();
    // The lease holds only its 3 calls in flight now.
    expect(await counter()).toMatchObject({ reservedNano: 3_000 });
  });

  it('stops at leaseMs even when no call came to renew the lease', async () => {
    const { admit, escrow, clock } = await setup(1_000_000);
    for (let i = 0; i < 3; i++) await admit();
    expect(await admit()).not.toBeNull();
    clock.now = T0 + 999;
    const lease = escrow.leaseOf(KEY)!;
    expect(lease.validUntil).toBe(T0 + 1_000);
    clock.now = T0 + 1_000;
    expect(escrow.take(KEY, WORST)).toBeNull(); // expired: only a write may grant more
  });

  it("leaves a crashed holder's lease to the sweep, which charges what it holds", async () => {
    const { admit, counter, storage, clock } = await setup(1_000_000);
    await storage.heartbeat('proc-a', new Date(T0));
    for (let i = 0; i < 3; i++) await admit();
    expect(await admit()).not.toBeNull();
    // proc-a dies holding its lease (8,000): the others' sweep charges it at that, flagged.
    clock.now += 30_000;
    expect(await storage.settleDeadProcesses(new Date(T0 + 10_000), new Date(clock.now))).toBe(1);
    expect(await counter()).toMatchObject({ spendNano: 8_000, reservedNano: 0 });
    const [log] = await storage.querySpendLogs({ requestId: 'lease:proc-a:1' });
    expect(log).toMatchObject({ spendNano: 8_000, estimated: true, metadata: { process_died: 'proc-a' } });
  });

  it('gives every lease back on close, and admits nothing from memory after', async () => {
    const { admit, counter, escrow } = await setup(null);
    for (let i = 0; i < 3; i++) await admit();
    const d = await admit();
    expect(d).not.toBeNull();
    await escrow.close();
    // The call in flight keeps its 1,000 until it settles.
    expect(await counter()).toMatchObject({ reservedNano: 1_000 });
    expect(escrow.take(KEY, WORST)).toBeNull();
    expect(await escrow.acquire(KEY, SCOPES, WORST, undefined)).toBeNull();
    escrow.returned(d!);
    await escrow.leaseOf(KEY)?.writing;
    expect(await counter()).toMatchObject({ spendNano: 0, reservedNano: 0 });
    expect(escrow.size).toBe(0);
  });
});

function logOf(requestId: string, cost: number) {
  return {
    requestId,
    callType: 'acompletion',
    apiKeyHash: 'k1',
    spendNano: cost,
    promptTokens: 1,
    completionTokens: 1,
    totalTokens: 2,
    startTime: new Date(T0),
    endTime: new Date(T0),
    model: 'gpt-4o',
    provider: 'openai',
    userId: null,
    teamId: 't1',
    endUser: null,
    tags: [],
    status: 'success' as const,
    estimated: false,
    httpStatus: 200,
    metadata: {},
  };
}
