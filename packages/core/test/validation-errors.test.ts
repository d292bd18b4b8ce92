import { afterAll, describe, expect, it } from 'vitest';
import * as z from 'zod';
import { coerceNumericStrings } from '../src/admin/litellm-fields.js';
import { unknownFields, validationDetail } from '../src/admin/schemas.js';
import { createSpendGuard, MemoryStorage } from '../src/index.js';
import { manage } from './management-call.js';

/**
 * LiteLLM (FastAPI + pydantic v2) answers a body or query that fails its schema with 422
 * `{"detail":[{"type","loc","msg","input"}]}`. Expected entries are pydantic's own types and texts,
 * as its docs (errors.pydantic.dev) list them, written out by hand.
 */

function failure(schema: z.ZodType, value: unknown): z.ZodError {
  const r = schema.safeParse(value);
  if (r.success) throw new Error('the value was expected to fail');
  return r.error;
}

describe('validationDetail: zod issues as pydantic errors', () => {
  const schema = z.object({
    max_budget: z.number({ error: 'must be a number of USD' }).nonnegative('must be 0 or more').optional(),
    rpm_limit: z.number().int().optional(),
    team_id: z.string(),
    role: z.enum(['admin', 'user']).optional(),
    key_alias: z.string().min(2).max(4).optional(),
    models: z.array(z.string()).min(1).optional(),
    blocked: z.boolean().optional(),
    metadata: z.record(z.string(), z.unknown()).optional(),
    budget_duration: z
      .string()
      .refine((v) => v.endsWith('d'), 'must be a duration like 30d')
      .optional(),
    page: z.coerce.number().int().min(1).max(100).optional(),
    windows: z.array(z.object({ max_budget: z.number() })).optional(),
  });

  it('a missing field is `missing`, its input the object that lacks it', () => {
    expect(validationDetail(failure(schema, { max_budget: 1 }), 'body', { max_budget: 1 })).toEqual([
      { type: 'missing', loc: ['body', 'team_id'], msg: 'Field required', input: { max_budget: 1 } },
    ]);
  });

  it('a wrong type is `<kind>_type`, an unparsable string `<kind>_parsing`, a fraction `int_from_float`', () => {
    const sent = {
      team_id: 7,
      max_budget: 'ten',
      rpm_limit: 1.5,
      blocked: 'yes',
      metadata: [],
      models: 'gpt-4o',
    };
    expect(validationDetail(failure(schema, sent), 'body', sent)).toEqual([
      {
        type: 'float_parsing',
        loc: ['body', 'max_budget'],
        msg: 'Input should be a valid number, unable to parse string as a number',
        input: 'ten',
      },
      {
        type: 'int_from_float',
        loc: ['body', 'rpm_limit'],
        msg: 'Input should be a valid integer, got a number with a fractional part',
        input: 1.5,
      },
      { type: 'string_type', loc: ['body', 'team_id'], msg: 'Input should be a valid string', input: 7 },
      { type: 'list_type', loc: ['body', 'models'], msg: 'Input should be a valid list', input: 'gpt-4o' },
      { type: 'bool_type', loc: ['body', 'blocked'], msg: 'Input should be a valid boolean', input: 'yes' },
      { type: 'dict_type', loc: ['body', 'metadata'], msg: 'Input should be a valid dictionary', input: [] },
    ]);
  });

  it('bounds, choices and refinements: greater_than_equal, less_than_equal, literal_error, string and list lengths, value_error', () => {
    const sent = {
      team_id: 't',
      max_budget: -1,
      role: 'owner',
      key_alias: 'a',
      models: [],
      budget_duration: '1h',
    };
    expect(validationDetail(failure(schema, sent), 'body', sent)).toEqual([
      {
        type: 'greater_than_equal',
        loc: ['body', 'max_budget'],
        msg: 'Input should be greater than or equal to 0',
        input: -1,
      },
      {
        type: 'literal_error',
        loc: ['body', 'role'],
        msg: "Input should be 'admin' or 'user'",
        input: 'owner',
      },
      {
        type: 'string_too_short',
        loc: ['body', 'key_alias'],
        msg: 'String should have at least 2 characters',
        input: 'a',
      },
      {
        type: 'too_short',
        loc: ['body', 'models'],
        msg: 'List should have at least 1 item after validation',
        input: [],
      },
      {
        type: 'value_error',
        loc: ['body', 'budget_duration'],
        msg: 'Value error, must be a duration like 30d',
        input: '1h',
      },
    ]);
    const long = { team_id: 't', key_alias: 'abcde', page: '101' };
    expect(validationDetail(failure(schema, long), 'body', long)).toEqual([
      {
        type: 'string_too_long',
        loc: ['body', 'key_alias'],
        msg: 'String should have at most 4 characters',
        input: 'abcde',
      },
      {
        type: 'less_than_equal',
        loc: ['body', 'page'],
        msg: 'Input should be less than or equal to 100',
        input: '101',
      },
    ]);
  });

  it('a query reads `query` in loc and the string sent as input; a nested field has its index in loc', () => {
    const query = { team_id: 't', page: 'two' };
    expect(validationDetail(failure(schema, query), 'query', query)).toEqual([
      {
        type: 'float_parsing',
        loc: ['query', 'page'],
        msg: 'Input should be a valid number, unable to parse string as a number',
        input: 'two',
      },
    ]);
    const nested = { team_id: 't', windows: [{ max_budget: 1 }, {}] };
    expect(validationDetail(failure(schema, nested), 'body', nested)).toEqual([
      { type: 'missing', loc: ['body', 'windows', 1, 'max_budget'], msg: 'Field required', input: {} },
    ]);
  });
});

describe('unknownFields: what stays a 400', () => {
  const entry = z.union([z.number(), z.strictObject({ budget_limit: z.number(), time_period: z.string() })]);
  const schema = z.object({
    model_max_budget: z.record(z.string(), entry).optional(),
    window: z.strictObject({ max_budget: z.number() }).optional(),
  });

  it('names an unknown key of a nested strict object, also inside a union branch it would otherwise fit', () => {
    expect(unknownFields(failure(schema, { window: { max_budget: 1, max_budgt: 2 } }).issues)).toEqual([
      'window.max_budgt',
    ]);
    const typo = { model_max_budget: { 'gpt-4o': { budget_limit: 1, time_period: '1d', time_perod: '1d' } } };
    expect(unknownFields(failure(schema, typo).issues)).toEqual(['model_max_budget.gpt-4o.time_perod']);
    // A wrong value beside the typo: zod reports the union as failed; the object branch names the typo.
    const both = {
      model_max_budget: { 'gpt-4o': { budget_limit: 'x', time_period: '1d', time_perod: '1d' } },
    };
    expect(unknownFields(failure(schema, both).issues)).toEqual(['model_max_budget.gpt-4o.time_perod']);
  });

  it("a union's failure is detailed by the branch the value is of", () => {
    const sent = { model_max_budget: { 'gpt-4o': { budget_limit: 'x', time_period: '1d' } } };
    expect(validationDetail(failure(schema, sent), 'body', sent)).toEqual([
      {
        type: 'float_parsing',
        loc: ['body', 'model_max_budget', 'gpt-4o', 'budget_limit'],
        msg: 'Input should be a valid number, unable to parse string as a number',
        input: 'x',
      },
    ]);
    const neither = { model_max_budget: { 'gpt-4o': 'ten' } };
    expect(validationDetail(failure(schema, neither), 'body', neither)).toEqual([
      {
        type: 'value_error',
        loc: ['body', 'model_max_budget', 'gpt-4o'],
        msg: 'Value error, Invalid input',
        input: 'ten',
      },
    ]);
  });

  it('names nothing when the failure is a value (so it is a 422)', () => {
    expect(unknownFields(failure(schema, { window: { max_budget: 'x' } }).issues)).toEqual([]);
    expect(unknownFields(failure(schema, { model_max_budget: { 'gpt-4o': 'ten' } }).issues)).toEqual([]);
  });
});

describe('coerceNumericStrings: numeric strings in number fields, as pydantic lax mode', () => {
  it('takes "12" and "1.5", leaves "", "abc" and "1e400" for the schema to refuse', () => {
    expect(coerceNumericStrings({ max_budget: '12', soft_budget: ' 1.5 ', rpm_limit: '60' })).toEqual({
      max_budget: 12,
      soft_budget: 1.5,
      rpm_limit: 60,
    });
    expect(coerceNumericStrings({ soft_budget: '', tpm_limit: 'abc', max_budget: '1e400' })).toEqual({
      soft_budget: '',
      tpm_limit: 'abc',
      max_budget: '1e400',
    });
    // LiteLLM's own rule for max_budget alone; other fields and metadata are left as sent.
    expect(coerceNumericStrings({ max_budget: '', key_alias: '12', metadata: { spend: '3' } })).toEqual({
      max_budget: null,
      key_alias: '12',
      metadata: { spend: '3' },
    });
  });
});

describe('the management API answers 422 for a schema failure, 400 for an unknown field', () => {
  const MASTER = 'sk-master-validation-errors';
  const guard = createSpendGuard({ storage: new MemoryStorage(), masterKey: MASTER });
  afterAll(() => guard.close());

  it('a body: 422 with the detail list alone, its input as sent (before numbers were taken)', async () => {
    const r = await manage(guard, MASTER, 'POST', '/key/generate', { max_budget: 'ten', rpm_limit: '1.5' });
    expect(r.status).toBe(422);
    expect(r.body).toEqual({
      detail: [
        {
          type: 'float_parsing',
          loc: ['body', 'max_budget'],
          msg: 'Input should be a valid number, unable to parse string as a number',
          input: 'ten',
        },
        {
          type: 'int_parsing',
          loc: ['body', 'rpm_limit'],
          msg: 'Input should be a valid integer, unable to parse string as an integer',
          input: '1.5',
        },
      ],
    });
  });

  it('"1e400" is no number: 422, not an infinite budget', async () => {
    const r = await manage(guard, MASTER, 'POST', '/team/new', { max_budget: '1e400' });
    expect(r.status).toBe(422);
    expect(r.body.detail).toEqual([
      expect.objectContaining({ type: 'float_parsing', loc: ['body', 'max_budget'], input: '1e400' }),
    ]);
  });

  it('a query: 422 with loc ["query", field]', async () => {
    const r = await manage(guard, MASTER, 'GET', '/v2/team/list?page=0');
    expect(r.status).toBe(422);
    expect(r.body).toEqual({
      detail: [
        {
          type: 'greater_than_equal',
          loc: ['query', 'page'],
          msg: 'Input should be greater than or equal to 1',
          input: '0',
        },
      ],
    });
  });

  it('leaves out an input too deep or too large to echo (10,000 levels of metadata): the answer stays small JSON', async () => {
    const deep = `{"metadata":${'{"x":'.repeat(10_000)}1${'}'.repeat(10_000)}}`;
    const res = await guard.management.handle({
      method: 'POST',
      path: '/team/new',
      query: new URLSearchParams(),
      header: (n) => (n === 'authorization' ? `Bearer ${MASTER}` : undefined),
      body: deep,
    });
    if (!res) throw new Error('/team/new is a management route');
    expect(res.status).toBe(422);
    const detail = (res.body as { detail: Array<Record<string, unknown>> }).detail;
    expect(detail).toHaveLength(1);
    expect(detail[0]!.loc).toEqual(['body', 'metadata', ...Array<string>(32).fill('x')]);
    expect(detail[0]).not.toHaveProperty('input');
    expect(JSON.stringify(res.body).length).toBeLessThan(1_000);
    // A list of 1,001 values: no input either; 1,000 are echoed.
    const many = await manage(guard, MASTER, 'POST', '/key/generate', { models: Array(1_001).fill(1) });
    expect(many.status).toBe(422);
    expect(many.body.detail[0]).toMatchObject({ loc: ['body', 'models', 0], input: 1 });
    const wide = await manage(guard, MASTER, 'POST', '/key/generate', { key_alias: Array(1_001).fill(1) });
    expect(wide.body.detail).toEqual([expect.not.objectContaining({ input: expect.anything() })]);
    const fits = await manage(guard, MASTER, 'POST', '/key/generate', { key_alias: Array(1_000).fill(1) });
    expect(fits.body.detail[0].input).toHaveLength(1_000);
  });

  it('an unknown field, top-level or nested: 400 in the error envelope naming it', async () => {
    const top = await manage(guard, MASTER, 'POST', '/key/generate', { max_budgt: 1 });
    expect(top.status).toBe(400);
    expect(top.body.error).toMatchObject({ param: 'max_budgt', code: '400' });
    const nested = await manage(guard, MASTER, 'POST', '/key/generate', {
      model_max_budget: { 'gpt-4o': { budget_limit: 1, time_perod: '1d' } },
    });
    expect(nested.status).toBe(400);
    expect(nested.body.error).toMatchObject({
      message: 'Invalid request: model_max_budget.gpt-4o.time_perod is not a field this route takes',
      param: 'model_max_budget.gpt-4o.time_perod',
      code: '400',
    });
    const query = await manage(guard, MASTER, 'GET', '/v2/team/list?pgae=1');
    expect(query.status).toBe(400);
    expect(query.body.error.param).toBe('pgae');
  });

  it("a handler's refusal keeps its status (spend is set alone: 400)", async () => {
    const key = (await manage(guard, MASTER, 'POST', '/key/generate', {})).body.key;
    const r = await manage(guard, MASTER, 'POST', '/key/update', { key, spend: 1, max_budget: 5 });
    expect(r.status).toBe(400);
    expect(r.body.error.param).toBe('spend');
  });
});
