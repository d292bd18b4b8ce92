import * as z from 'zod';
import { SpendGuardError } from '../errors.js';
import type { ManagementHost } from '../guard-api.js';
import { INPUT_LIMITS, storableText } from '../input-hygiene.js';
import type { SpendStorage } from '../storage/storage-contract.js';
import type { Caller, RouteAccess } from './caller.js';
import { ok } from './entity-json.js';
import type { Handler, ManagementApi } from './management-types.js';

/**
 * LiteLLM's model routes: `GET /v1/models` and `/models` (the OpenAI model list), `GET /model/info`
 * and `/v1/model/info` (one entry per deployment), `GET /model_group/info` (one per model name).
 *
 * spendguard routes no models: the app calls its providers. So the models listed are the ones the
 * app declares with the `models` option, each as its own deployment and group, with its price-table
 * data through the guard's PriceBook (a `modelAliases` name priced as its target). Without the option
 * the lists are empty. The master key sees every declared model; any other key those it may call (its
 * own `models`, else its team's, with wildcards and aliases as at admission).
 *
 * `/v1/models` and `/models` are answered only with the `serveModelList` option: the management API
 * is mounted before the app's routes, and would otherwise hide an app's own `/v1/models`.
 */

/** The routes the management API answers only with `serveModelList`. */
export const MODEL_LIST_ROUTES: ReadonlySet<string> = new Set(['GET /v1/models', 'GET /models']);

/** LiteLLM's `created` on every `/v1/models` entry (its DEFAULT_MODEL_CREATED_AT_TIME). */
const MODEL_CREATED_AT = 1_677_610_602;

const name = storableText(INPUT_LIMITS.nameLength).min(1, 'must not be empty');
const noQuery = z.object({});
const modelInfoQuery = z.object({ litellm_model_id: name.optional() });
const modelGroupQuery = z.object({ model_group: name.optional() });

export function modelInfoRoutes(
  api: ManagementApi,
  guard: ManagementHost,
): Record<string, { access: RouteAccess; handler: Handler }> {
  const list: Handler = async (r, c, s) => {
    api.parseQuery(r, noQuery);
    const data = (await visibleModels(guard, c, s)).map((id) => ({
      id,
      object: 'model',
      created: MODEL_CREATED_AT,
      owned_by: 'openai',
    }));
    return ok({ data, object: 'list' });
  };
  const info: Handler = async (r, c, s) => {
    const q = api.parseQuery(r, modelInfoQuery);
    const names = await visibleModels(guard, c, s);
    const chosen = q.litellm_model_id === undefined ? names : names.filter((n) => n === q.litellm_model_id);
    if (q.litellm_model_id !== undefined && chosen.length === 0) {
      throw new SpendGuardError('NOT_FOUND', `Model id = ${q.litellm_model_id} not found on litellm proxy`, {
        param: 'litellm_model_id',
      });
    }
    return ok({ data: chosen.map((n) => deploymentJson(guard, n)) });
  };
  const groups: Handler = async (r, c, s) => {
    const q = api.parseQuery(r, modelGroupQuery);
    const names = (await visibleModels(guard, c, s)).filter(
      (n) => q.model_group === undefined || n === q.model_group,
    );
    return ok({ data: names.map((n) => groupJson(guard, n)) });
  };
  return {
    'GET /v1/models': { access: 'self', handler: list },
    'GET /models': { access: 'self', handler: list },
    'GET /model/info': { access: 'self', handler: info },
    'GET /v1/model/info': { access: 'self', handler: info },
    'GET /model_group/info': { access: 'self', handler: groups },
  };
}

/** The declared models the caller may call, in the order declared. */
async function visibleModels(
  guard: ManagementHost,
  caller: Caller,
  storage: SpendStorage,
): Promise<string[]> {
  const declared = guard.options.models ?? [];
  if (caller.role === 'proxy_admin') return declared;
  const key = await storage.getKey(caller.tokenHash);
  if (!key) return [];
  const team = key.teamId ? await storage.getTeam(key.teamId) : null;
  return declared.filter((m) => guard.keyAllowsModel(m, key.models, team?.models ?? []));
}

/** A model's price-table data as LiteLLM's `model_info` has it; `null` where the table knows none. */
function priceInfo(guard: ManagementHost, model: string) {
  const price = guard.prices.resolve(model);
  // Prices are kept in pico-dollars a token: 1 USD = 1e12.
  return {
    max_tokens: price?.maxOutputTokens ?? null,
    max_input_tokens: price?.maxInputTokens ?? null,
    max_output_tokens: price?.maxOutputTokens ?? null,
    input_cost_per_token: price ? price.inputPico / 1e12 : null,
    output_cost_per_token: price ? price.outputPico / 1e12 : null,
    litellm_provider: price?.provider ?? null,
    mode: price?.mode ?? null,
  };
}

function deploymentJson(guard: ManagementHost, model: string) {
  const aliases = guard.options.modelAliases ?? {};
  const target = Object.hasOwn(aliases, model) ? aliases[model]! : model;
  return {
    model_name: model,
    litellm_params: { model: target },
    model_info: { id: model, db_model: false, key: target, ...priceInfo(guard, model) },
  };
}

function groupJson(guard: ManagementHost, model: string) {
  const p = priceInfo(guard, model);
  return {
    model_group: model,
    providers: p.litellm_provider === null ? [] : [p.litellm_provider],
    max_input_tokens: p.max_input_tokens,
    max_output_tokens: p.max_output_tokens,
    input_cost_per_token: p.input_cost_per_token,
    output_cost_per_token: p.output_cost_per_token,
    mode: p.mode,
  };
}
