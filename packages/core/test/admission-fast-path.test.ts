import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { mayBeAdminPath } from '../src/adapter/index.js';
import { createSpendGuard, MemoryStorage } from '../src/index.js';
import { MasterKey, PresentedSecrets } from '../src/pipeline/identify.js';

// The reference: SHA-256 hex of the secret, computed here rather than by the code under test.
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

describe('presented secrets (hashed once per distinct secret)', () => {
  it('gives the SHA-256 of each secret, and says which is the master key', () => {
    const secrets = new PresentedSecrets(new MasterKey('sk-the-master'), 4);
    expect(secrets.of('sk-a-virtual-key')).toEqual({ hash: sha256('sk-a-virtual-key'), master: false });
    expect(secrets.of('sk-the-master')).toEqual({ hash: sha256('sk-the-master'), master: true });
    // Asked again (now remembered): the same answers.
    expect(secrets.of('sk-a-virtual-key')).toEqual({ hash: sha256('sk-a-virtual-key'), master: false });
    expect(secrets.of('sk-the-master').master).toBe(true);
  });

  it('has no master key when none is configured', () => {
    const secrets = new PresentedSecrets(new MasterKey(undefined), 4);
    expect(secrets.of('sk-the-master')).toEqual({ hash: sha256('sk-the-master'), master: false });
  });

  it('stays right past its bound (the oldest secrets are forgotten and hashed again)', () => {
    const secrets = new PresentedSecrets(new MasterKey('sk-m'), 2);
    const names = ['sk-1', 'sk-2', 'sk-3', 'sk-m', 'sk-1', 'sk-3', 'sk-2', 'sk-m'];
    for (const name of names)
      expect(secrets.of(name)).toEqual({ hash: sha256(name), master: name === 'sk-m' });
  });
});

describe('the secret a request presents', () => {
  const headers =
    (h: Record<string, string>) =>
    (name: string): string | undefined =>
      h[name];

  it('is read from Authorization (remembered by the header) or the API-key headers, and refused alike', () => {
    const secrets = new PresentedSecrets(new MasterKey('sk-the-master'), 8);
    for (let round = 0; round < 2; round++) {
      expect(secrets.presentedBy(headers({ authorization: 'Bearer sk-one' }))).toEqual({
        hash: sha256('sk-one'),
        master: false,
      });
      expect(secrets.presentedBy(headers({ authorization: '  bearer   sk-the-master ' }))).toEqual({
        hash: sha256('sk-the-master'),
        master: true,
      });
      expect(secrets.presentedBy(headers({ 'x-api-key': 'sk-two' })).hash).toBe(sha256('sk-two'));
      // Refusals are never remembered: the same header is refused again, with the same error.
      expect(() => secrets.presentedBy(headers({ authorization: 'Basic sk-one' }))).toThrow(
        /Malformed API Key/,
      );
      expect(() => secrets.presentedBy(headers({ authorization: 'Bearer pk-one' }))).toThrow(
        /Keys start with 'sk-'/,
      );
      expect(() => secrets.presentedBy(headers({}))).toThrow(/No api key passed/);
    }
  });
});

describe("the admin router's cheap 'not mine'", () => {
  const guard = createSpendGuard({ storage: new MemoryStorage(), masterKey: 'sk-master-fast-path' });
  const routes = guard.management.routeAccess().map(([route]) => route.split(' ') as [string, string]);

  it('never turns away a management route, at the root or under any base path', () => {
    expect(routes.length).toBeGreaterThan(50);
    for (const [, path] of routes) {
      const concrete = path.replace('{key_id}', 'sk-some-key');
      for (const base of ['', '/admin', '/api/v2/llm']) {
        expect(mayBeAdminPath(guard, base + concrete), base + concrete).toBe(true);
        expect(mayBeAdminPath(guard, `${base + concrete}/`), `${base + concrete}/`).toBe(true);
      }
    }
    // LiteLLM's key-in-path form, and the dashboard.
    expect(mayBeAdminPath(guard, '/key/sk-abc/regenerate')).toBe(true);
    expect(mayBeAdminPath(guard, '/ui')).toBe(true);
    expect(mayBeAdminPath(guard, '/admin/ui/keys')).toBe(true);
  });

  it('turns away the guarded routes, which the management API does not handle either', () => {
    for (const path of ['/v1/chat/completions', '/v1/messages', '/chat/completions', '/v1/embeddings', '/']) {
      expect(mayBeAdminPath(guard, path), path).toBe(false);
      expect(guard.management.handles('POST', path), path).toBe(false);
    }
  });

  it('leaves to the full check a path that canonicalisation could change', () => {
    // `/v1/x/..%2F..` and the like: `.`, `\`, `%` or a query make the slow path decide.
    expect(mayBeAdminPath(guard, '/v1/../key/generate')).toBe(true);
    expect(mayBeAdminPath(guard, '/v1\\..\\key\\generate')).toBe(true);
    expect(mayBeAdminPath(guard, '/v1/%2e%2e/key/generate')).toBe(true);
    expect(guard.management.handles('POST', '/v1/../key/generate')).toBe(true);
  });
});
