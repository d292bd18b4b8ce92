import { describe, expect, it } from 'vitest';
import { createSpendGuard, MemoryStorage } from '../src/index.js';

describe('the models and serveModelList options', () => {
  it('refuses a model list that is not one name per model, saying how to fix it', () => {
    const make = (models: unknown) =>
      createSpendGuard({ storage: new MemoryStorage(), models: models as string[] });
    expect(() => make(['gpt-4o', 'gpt-4o'])).toThrow('models: must name each model once');
    expect(() => make(['gpt-4o', ''])).toThrow('models.1: must not be empty');
    expect(() => make('gpt-4o')).toThrow("models: must be an array of model names, e.g. ['gpt-4o']");
  });

  it('answers /v1/models from the management API only when serveModelList is set', () => {
    const off = createSpendGuard({ storage: new MemoryStorage(), models: ['gpt-4o'] });
    const on = createSpendGuard({ storage: new MemoryStorage(), models: ['gpt-4o'], serveModelList: true });
    expect(off.management.handles('GET', '/v1/models')).toBe(false);
    expect(off.management.handles('GET', '/models')).toBe(false);
    expect(off.management.handles('GET', '/model/info')).toBe(true);
    expect(on.management.handles('GET', '/v1/models')).toBe(true);
    expect(on.management.handles('GET', '/models')).toBe(true);
  });
});
