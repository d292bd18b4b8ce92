import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/**
 * LiteLLM's model routes over the models the app declares (the `models` option): `/v1/models`,
 * `/models` (only with `serveModelList`), `/model/info`, `/v1/model/info`, `/model_group/info`.
 */

const DECLARED = {
  models: ['gpt-4o', 'prod-gpt4o-eastus', 'house-model'],
  modelAliases: { 'prod-gpt4o-eastus': 'gpt-4o' },
  // Round made-up prices, so that the expected values read straight off this entry.
  modelPrices: {
    'house-model': {
      input_cost_per_token: 1e-6,
      output_cost_per_token: 2e-6,
      max_input_tokens: 1000,
      max_output_tokens: 100,
      litellm_provider: 'house',
      mode: 'chat',
    },
  },
};

// gpt-4o in LiteLLM's model_prices_and_context_window.json: $2.50 / $10 per million tokens,
// 128,000 tokens in, 16,384 out.
const GPT_4O = {
  max_tokens: 16384,
  max_input_tokens: 128000,
  max_output_tokens: 16384,
  input_cost_per_token: 2.5e-6,
  output_cost_per_token: 1e-5,
  litellm_provider: 'openai',
  mode: 'chat',
};

describe.each(ADAPTERS)('model routes on $name', (framework) => {
  let app: TestApp;
  const get = (path: string, auth?: string | null) => admin(app, 'GET', path, undefined, auth);
  afterEach(async () => {
    await app.close();
  });

  it('leaves /v1/models to the app unless serveModelList is set; the info routes list nothing undeclared', async () => {
    app = await startTestApp(framework);
    const own = await get('/v1/models');
    expect(own.status).toBe(200);
    expect(own.body).toEqual({ object: 'list', data: [{ id: 'gpt-4o', object: 'model' }] }); // the app's
    expect((await get('/model/info')).body).toEqual({ data: [] });
    expect((await get('/model_group/info')).body).toEqual({ data: [] });
  });

  it('lists the declared models, with their prices, as LiteLLM’s shapes', async () => {
    app = await startTestApp(framework, { guardOptions: { ...DECLARED, serveModelList: true } });
    for (const path of ['/v1/models', '/models']) {
      const list = await get(path);
      expect(list.status, path).toBe(200);
      expect(list.body).toEqual({
        object: 'list',
        data: DECLARED.models.map((id) => ({ id, object: 'model', created: 1677610602, owned_by: 'openai' })),
      });
    }
    for (const path of ['/model/info', '/v1/model/info']) {
      const info = await get(path);
      expect(info.status, path).toBe(200);
      expect(info.body.data).toEqual([
        {
          model_name: 'gpt-4o',
          litellm_params: { model: 'gpt-4o' },
          model_info: { id: 'gpt-4o', db_model: false, key: 'gpt-4o', ...GPT_4O },
        },
        {
          model_name: 'prod-gpt4o-eastus',
          litellm_params: { model: 'gpt-4o' }, // the alias's target, priced as it
          model_info: { id: 'prod-gpt4o-eastus', db_model: false, key: 'gpt-4o', ...GPT_4O },
        },
        {
          model_name: 'house-model',
          litellm_params: { model: 'house-model' },
          model_info: {
            id: 'house-model',
            db_model: false,
            key: 'house-model',
            max_tokens: 100,
            max_input_tokens: 1000,
            max_output_tokens: 100,
            input_cost_per_token: 1e-6,
            output_cost_per_token: 2e-6,
            litellm_provider: 'house',
            mode: 'chat',
          },
        },
      ]);
    }
    const one = await get('/model/info?litellm_model_id=house-model');
    expect(one.body.data.map((d: { model_name: string }) => d.model_name)).toEqual(['house-model']);
    const none = await get('/model/info?litellm_model_id=nope');
    expect(none.status).toBe(404);
    expect(none.body.error.param).toBe('litellm_model_id');
    const group = await get('/model_group/info?model_group=house-model');
    expect(group.body).toEqual({
      data: [
        {
          model_group: 'house-model',
          providers: ['house'],
          max_input_tokens: 1000,
          max_output_tokens: 100,
          input_cost_per_token: 1e-6,
          output_cost_per_token: 2e-6,
          mode: 'chat',
        },
      ],
    });
    expect((await get('/model_group/info')).body.data).toHaveLength(3);
  });

  it('shows a key the declared models it may call: its own list, else its team’s, aliases as at admission', async () => {
    app = await startTestApp(framework, { guardOptions: { ...DECLARED, serveModelList: true } });
    const post = (path: string, body: unknown) => admin(app, 'POST', path, body);
    await post('/team/new', { team_id: 'eng', models: ['gpt-4o'] });
    const teamKey = (await post('/key/generate', { team_id: 'eng' })).body.key;
    const houseKey = (await post('/key/generate', { team_id: 'eng', models: ['house-model'] })).body.key;
    const anyKey = (await post('/key/generate', {})).body.key;
    const ids = async (path: string, key: string) =>
      (await get(path, key)).body.data.map(
        (d: { id?: string; model_name?: string; model_group?: string }) =>
          d.id ?? d.model_name ?? d.model_group,
      );
    // The team allows gpt-4o, and so its alias; the key's own list replaces the team's.
    expect(await ids('/v1/models', teamKey)).toEqual(['gpt-4o', 'prod-gpt4o-eastus']);
    expect(await ids('/model/info', teamKey)).toEqual(['gpt-4o', 'prod-gpt4o-eastus']);
    expect(await ids('/model_group/info', houseKey)).toEqual(['house-model']);
    expect(await ids('/v1/models', anyKey)).toEqual(DECLARED.models);
    expect((await get('/v1/models', null)).status).toBe(401);
  });

  it('refuses query parameters it does not act on, naming them (400), and a value its schema refuses (422)', async () => {
    app = await startTestApp(framework, { guardOptions: { ...DECLARED, serveModelList: true } });
    for (const [path, param] of [
      ['/v1/models?return_wildcard_routes=true', 'return_wildcard_routes'],
      ['/model/info?user_models_only=true', 'user_models_only'],
    ] as const) {
      const res = await get(path);
      expect(res.status, path).toBe(400);
      expect(res.body.error.param).toBe(param);
    }
    // A parameter it takes, with a value its schema refuses: LiteLLM's 422.
    const empty = await get('/model_group/info?model_group=');
    expect(empty.status).toBe(422);
    expect(empty.body.detail[0]).toMatchObject({ loc: ['query', 'model_group'], input: '' });
  });
});
