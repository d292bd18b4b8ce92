// A key's temporary budget increase lives in its metadata (temp-budget.ts): new metadata sent while an
// increase is over but not yet ended by a call must put the cap back, and metadata may never forge one.
import { describe, expect, it } from 'vitest';
import { createSpendGuard, MemoryStorage } from '../src/index.js';
import { manage } from './management-call.js';

const MASTER = 'sk-master-temp-budget';

describe('temporary budget increases and the metadata they live in', () => {
  it('puts the cap back when metadata replaces an increase that is over', async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    const guard = createSpendGuard({
      storage: new MemoryStorage(),
      masterKey: MASTER,
      now: () => new Date(clock.now),
    });
    const { token } = (await manage(guard, MASTER, 'POST', '/key/generate', { max_budget: 10 })).body;
    const raised = await manage(guard, MASTER, 'POST', '/key/update', {
      key: token,
      temp_budget_increase: 5,
      temp_budget_expiry: '2026-05-04T11:00:00Z',
    });
    expect(raised.body.max_budget).toBe(15);
    clock.now = Date.parse('2026-05-04T12:00:00Z'); // over, and no call has ended it yet
    const updated = await manage(guard, MASTER, 'POST', '/key/update', {
      key: token,
      metadata: { team: 'web' },
    });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ max_budget: 10, metadata: { team: 'web' } });
    await guard.close();
  });

  it('refuses metadata that would start one', async () => {
    const guard = createSpendGuard({ storage: new MemoryStorage(), masterKey: MASTER });
    const { token } = (await manage(guard, MASTER, 'POST', '/key/generate', { max_budget: 10 })).body;
    const forged = await manage(guard, MASTER, 'POST', '/key/update', {
      key: token,
      metadata: {
        temp_budget_increase: 1,
        temp_budget_expiry: '2099-01-01T00:00:00Z',
        spendguard_base_max_budget: 9e6,
      },
    });
    expect(forged.status).toBe(400);
    expect(forged.body.error.param).toBe('metadata.temp_budget_increase');
    expect((await manage(guard, MASTER, 'GET', `/key/info?key=${token}`)).body.info).toMatchObject({
      max_budget: 10,
      metadata: {},
    });
    await guard.close();
  });
});
