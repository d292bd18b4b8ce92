import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/**
 * LiteLLM's `POST /key/bulk_update` (all or nothing here) and `POST /key/{key_id}/reset_spend`, with
 * LiteLLM's shapes, limits and RBAC (its key_management_endpoints.py and its own route tests).
 */

interface Key {
  key: string;
  token: string;
}

describe.each(ADAPTERS)('key bulk update and spend reset on $name', (framework) => {
  let app: TestApp;
  let m: (method: string, path: string, body?: unknown, auth?: string | null) => Promise<any>;
  let alpha: Key; // in team eng, made by the master key
  let beta: Key; // in no team
  let ann: Key; // ann's key: ann is an admin of eng
  const info = async (k: Key) => (await m('GET', `/key/info?key=${k.token}`)).body.info;

  beforeEach(async () => {
    app = await startTestApp(framework);
    m = (method, path, body, auth) => admin(app, method, path, body, auth);
    await m('POST', '/user/new', { user_id: 'ann', auto_create_key: false });
    await m('POST', '/team/new', { team_id: 'eng', members_with_roles: [{ user_id: 'ann', role: 'admin' }] });
    alpha = (await m('POST', '/key/generate', { team_id: 'eng', max_budget: 10 })).body;
    beta = (await m('POST', '/key/generate', { max_budget: 10, tags: ['old'] })).body;
    ann = (await m('POST', '/key/generate', { user_id: 'ann', team_id: 'eng' })).body;
  });
  afterEach(async () => {
    await app.close();
  });

  describe('POST /key/bulk_update', () => {
    it('updates every key, by secret or id, and answers with LiteLLM’s shape', async () => {
      const res = await m('POST', '/key/bulk_update', {
        keys: [
          { key: alpha.key, max_budget: 20, tags: ['prod', 'api'] },
          // LiteLLM's item defaults every field to null: a client sends null for what it leaves alone.
          { key: beta.token, max_budget: null, team_id: null, budget_id: null, tags: ['new'] },
        ],
      });
      expect(res.status).toBe(200);
      expect(res.body.total_requested).toBe(2);
      expect(res.body.failed_updates).toEqual([]);
      expect(res.body.successful_updates.map((u: { key: string }) => u.key)).toEqual([alpha.key, beta.token]);
      expect(res.body.successful_updates[0].key_info).toMatchObject({
        key: alpha.token,
        max_budget: 20,
        tags: ['prod', 'api'],
      });
      expect(await info(alpha)).toMatchObject({ max_budget: 20, tags: ['prod', 'api'] });
      expect(await info(beta)).toMatchObject({ max_budget: 10, tags: ['new'] });
      // Fields left out, or null, are kept.
      await m('POST', '/key/bulk_update', { keys: [{ key: beta.key, max_budget: 3 }] });
      await m('POST', '/key/bulk_update', { keys: [{ key: beta.key, tags: null }] });
      expect(await info(beta)).toMatchObject({ max_budget: 3, tags: ['new'] });
    });

    it('refuses the whole batch for one bad entry, naming it, and writes nothing', async () => {
      const batches: Array<[unknown[], number, string]> = [
        [
          [
            { key: alpha.key, max_budget: 30 },
            { key: 'sk-no-such-key-0000000000', max_budget: 5 },
          ],
          404,
          'keys.1.key',
        ],
        [
          [
            { key: alpha.key, max_budget: 30 },
            { key: beta.key, max_budget: -1 },
          ],
          422,
          'keys.1.max_budget',
        ],
        [
          [
            { key: alpha.key, max_budget: 30 },
            { key: beta.key, tags: 'prod' },
          ],
          422,
          'keys.1.tags',
        ],
        [
          [
            { key: alpha.key, max_budget: 30 },
            { key: beta.key, team_id: 'no-such-team' },
          ],
          400,
          'keys.1.team_id',
        ],
        [
          [
            { key: alpha.key, max_budget: 30 },
            { key: beta.key, budget_id: 'tier-1' },
          ],
          400,
          'keys.1.budget_id',
        ],
        [
          [
            { key: alpha.key, max_budget: 30 },
            { key: beta.key, max_budgt: 5 },
          ],
          400,
          'keys.1.max_budgt',
        ],
        [
          [
            { key: alpha.key, max_budget: 30 },
            { key: alpha.token, tags: ['x'] },
          ],
          400,
          'keys.1.key',
        ],
        [[{ key: alpha.key, max_budget: 30 }, 'sk-just-a-string'], 422, 'keys.1'],
        [[{ max_budget: 30 }], 422, 'keys.0.key'],
      ];
      // A value the schema refuses: LiteLLM's 422, loc into the batch; the rest: 400 or 404 naming it.
      for (const [keys, status, param] of batches) {
        const res = await m('POST', '/key/bulk_update', { keys });
        expect(res.status, param).toBe(status);
        if (status === 422) {
          const loc = param.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p));
          expect(res.body.detail[0].loc, param).toEqual(['body', ...loc]);
        } else {
          expect(res.body.error.param).toBe(param);
        }
      }
      expect(await info(alpha)).toMatchObject({ max_budget: 10, tags: [] });
      expect(await info(beta)).toMatchObject({ max_budget: 10, tags: ['old'] });
    });

    it('leaves a key with a temporary budget increase to /key/update', async () => {
      const raised = await m('POST', '/key/update', {
        key: alpha.token,
        temp_budget_increase: 5,
        temp_budget_expiry: '2099-01-01T00:00:00Z',
      });
      expect(raised.body.max_budget).toBe(15); // 10 + 5
      const res = await m('POST', '/key/bulk_update', {
        keys: [
          { key: beta.key, max_budget: 30 },
          { key: alpha.key, max_budget: 20 },
        ],
      });
      expect(res.status).toBe(400);
      expect(res.body.error.param).toBe('keys.1.max_budget');
      expect(await info(alpha)).toMatchObject({ max_budget: 15 });
      expect(await info(beta)).toMatchObject({ max_budget: 10 });
      // Its tags are still the batch's to change.
      const tags = await m('POST', '/key/bulk_update', { keys: [{ key: alpha.key, tags: ['t'] }] });
      expect(tags.status).toBe(200);
      expect(await info(alpha)).toMatchObject({ max_budget: 15, tags: ['t'] });
    });

    it('takes 1 to 500 keys, as LiteLLM', async () => {
      const none = await m('POST', '/key/bulk_update', { keys: [] });
      expect(none.status).toBe(400);
      expect(none.body.error).toMatchObject({ message: 'No keys provided for update', param: 'keys' });
      const many = Array.from({ length: 501 }, () => ({ key: alpha.key, max_budget: 1 }));
      const over = await m('POST', '/key/bulk_update', { keys: many });
      expect(over.status).toBe(400);
      expect(over.body.error.message).toBe('Maximum 500 keys can be updated at once. Found 501 keys.');
      expect(await info(alpha)).toMatchObject({ max_budget: 10 });
    });

    it('moves keys to another team under LiteLLM’s checks, all or none; the next call spends in the new team', async () => {
      await m('POST', '/team/new', { team_id: 'ops', models: ['gpt-4o'], rpm_limit: 10 });
      const mini = (await m('POST', '/key/generate', { models: ['gpt-4o-mini'] })).body as Key;
      const fast = (await m('POST', '/key/generate', { rpm_limit: 20 })).body as Key;
      const chat = async (k: Key) => {
        const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${k.key}`, 'content-type': 'application/json' },
          body: JSON.stringify({
            model: 'gpt-4o',
            max_tokens: 8,
            messages: [{ role: 'user', content: 'hi' }],
          }),
        });
        await res.arrayBuffer();
        await app.settled();
        return res.status;
      };
      expect(await chat(beta)).toBe(200); // beta is now in the guard's key cache, in no team

      // LiteLLM's validate_key_team_change: each refusal names its entry; nothing moves.
      const refused: Array<[Key, RegExp]> = [
        [ann, /^User=ann is not a member of the team=ops\. Check team members via `\/team\/info`\.$/],
        [mini, /may call model 'gpt-4o-mini', which team=ops does not allow/],
        [fast, /has a rpm_limit=20 which is greater than the team's rpm_limit=10\.$/],
      ];
      for (const [k, message] of refused) {
        const res = await m('POST', '/key/bulk_update', {
          keys: [
            { key: beta.key, team_id: 'ops' },
            { key: k.key, team_id: 'ops' },
          ],
        });
        expect(res.status, String(message)).toBe(403);
        expect(res.body.error.param).toBe('keys.1.team_id');
        expect(res.body.error.message).toMatch(message);
      }
      expect((await info(beta)).team_id).toBeNull();

      const moved = await m('POST', '/key/bulk_update', {
        keys: [
          { key: beta.key, team_id: 'ops' },
          { key: alpha.key, team_id: 'eng' }, // already there: unchanged
        ],
      });
      expect(moved.status).toBe(200);
      expect(
        moved.body.successful_updates.map((u: { key_info: { team_id: string } }) => u.key_info.team_id),
      ).toEqual(['ops', 'eng']);
      expect((await info(beta)).team_id).toBe('ops');
      expect((await m('GET', '/team/info?team_id=ops')).body.team_info.spend).toBe(0);
      expect(await chat(beta)).toBe(200);
      const logs = (await m('GET', `/spend/logs?api_key=${beta.token}&summarize=false`)).body as Array<{
        team_id: string | null;
        spend: number;
      }>;
      expect(logs.map((l) => l.team_id)).toEqual(['ops', null]); // newest first
      expect((await m('GET', '/team/info?team_id=ops')).body.team_info.spend).toBe(logs[0]!.spend);
    });

    it('links keys to a budget tier, whose limits then apply; a linked key takes no max_budget of its own', async () => {
      expect(
        (await m('POST', '/budget/new', { budget_id: 'gold', max_budget: 2, rpm_limit: 5 })).status,
      ).toBe(200);
      const bad = await m('POST', '/key/bulk_update', {
        keys: [
          { key: beta.key, budget_id: 'gold' },
          { key: alpha.key, budget_id: 'gold', max_budget: 3 },
        ],
      });
      expect([bad.status, bad.body.error.param]).toEqual([400, 'keys.1.max_budget']);
      expect(await info(beta)).toMatchObject({ budget_id: null, max_budget: 10 });

      const res = await m('POST', '/key/bulk_update', {
        keys: [
          { key: beta.key, budget_id: 'gold' },
          { key: alpha.key, tags: ['x'] },
        ],
      });
      expect(res.status).toBe(200);
      expect(res.body.successful_updates[0].key_info).toMatchObject({
        budget_id: 'gold',
        max_budget: 2,
        rpm_limit: 5,
      });
      expect(await info(beta)).toMatchObject({ budget_id: 'gold', max_budget: 2, rpm_limit: 5 });
      // Linked now: its own max_budget is refused, in a batch as on /key/update.
      const own = await m('POST', '/key/bulk_update', { keys: [{ key: beta.key, max_budget: 7 }] });
      expect([own.status, own.body.error.param]).toEqual([400, 'keys.0.max_budget']);
      expect(await info(beta)).toMatchObject({ max_budget: 2 });
    });

    it('is the master key’s alone', async () => {
      const res = await m(
        'POST',
        '/key/bulk_update',
        { keys: [{ key: alpha.key, max_budget: 99 }] },
        ann.key,
      );
      expect(res.status).toBe(403);
      expect(await info(alpha)).toMatchObject({ max_budget: 10 });
    });
  });

  describe('POST /key/{key_id}/reset_spend', () => {
    beforeEach(async () => {
      for (const k of [alpha, beta]) {
        expect((await m('POST', '/key/update', { key: k.token, spend: 5 })).status).toBe(200);
      }
    });

    it('sets the spend to reset_to and answers the spend before and after', async () => {
      const res = await m('POST', `/key/${alpha.key}/reset_spend`, { reset_to: 2 });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ key: alpha.token, spend: 2, previous_spend: 5, max_budget: 10 });
      expect(await info(alpha)).toMatchObject({ spend: 2 });
      // By the key's id too, down to 0.
      const zero = await m('POST', `/key/${alpha.token}/reset_spend`, { reset_to: 0 });
      expect(zero.body).toMatchObject({ spend: 0, previous_spend: 2 });
    });

    it('refuses reset_to below 0, above the spend or above the budget, and changes nothing', async () => {
      await m('POST', '/key/update', { key: beta.token, max_budget: 1 });
      const cases: Array<[string, unknown, string]> = [
        [alpha.key, -1, 'reset_to must be >= 0'],
        [alpha.key, 6, 'reset_to (6) must be <= current spend (5)'],
        [beta.key, 2, 'reset_to (2) must be <= budget (1)'],
      ];
      for (const [key, resetTo, message] of cases) {
        const res = await m('POST', `/key/${key}/reset_spend`, { reset_to: resetTo });
        expect(res.status, message).toBe(400);
        expect(res.body.error).toMatchObject({ message, param: 'reset_to' });
      }
      // Not a number, or missing: the schema's (LiteLLM's 422); the bounds above are the handler's (400).
      const lots = await m('POST', `/key/${alpha.key}/reset_spend`, { reset_to: 'lots' });
      expect(lots.status).toBe(422);
      expect(lots.body.detail).toEqual([
        expect.objectContaining({ type: 'float_parsing', loc: ['body', 'reset_to'], input: 'lots' }),
      ]);
      const missing = await m('POST', `/key/${alpha.key}/reset_spend`, {});
      expect(missing.status).toBe(422);
      expect(missing.body.detail).toEqual([
        expect.objectContaining({ type: 'missing', loc: ['body', 'reset_to'] }),
      ]);
      expect(await info(alpha)).toMatchObject({ spend: 5 });
      expect(await info(beta)).toMatchObject({ spend: 5 });
    });

    it('answers 404 for a key that does not exist', async () => {
      const res = await m('POST', '/key/sk-no-such-key-0000000000/reset_spend', { reset_to: 0 });
      expect(res.status).toBe(404);
    });

    it('lets the master key and an admin of the key’s team reset, no one else', async () => {
      // ann administers eng: alpha is hers to reset; beta is in no team.
      expect((await m('POST', `/key/${alpha.key}/reset_spend`, { reset_to: 1 }, ann.key)).status).toBe(200);
      expect((await m('POST', `/key/${beta.key}/reset_spend`, { reset_to: 1 }, ann.key)).status).toBe(403);
      // A key that administers nothing may not reset, not even itself.
      expect((await m('POST', `/key/${beta.key}/reset_spend`, { reset_to: 1 }, beta.key)).status).toBe(403);
      expect(await info(alpha)).toMatchObject({ spend: 1 });
      expect(await info(beta)).toMatchObject({ spend: 5 });
    });
  });
});
