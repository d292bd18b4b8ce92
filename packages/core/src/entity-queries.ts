import type { StoreReader } from './guard-api.js';
import { keyHashFromKeyOrHash } from './keys.js';
import { type BudgetRemaining, toBudgetRemaining } from './queries.js';
import type {
  KeyRecord,
  ScopeRef,
  SpendStorage,
  TeamRecord,
  UserRecord,
} from './storage/storage-contract.js';

/** A record with its budget as it stands now (`null`: no counter). */
export type WithBudget<T> = T & { budget: BudgetRemaining | null };

/** Attaches each record's budget, read in one `getBudgets`. */
async function withBudgets<T>(
  guard: StoreReader,
  storage: SpendStorage,
  records: T[],
  scopeOf: (r: T) => ScopeRef,
): Promise<WithBudget<T>[]> {
  const states = await storage.getBudgets(records.map(scopeOf), guard.now());
  const byId = new Map(states.map((s) => [`${s.scope.kind}:${s.scope.id}`, s]));
  return records.map((r) => {
    const scope = scopeOf(r);
    const state = byId.get(`${scope.kind}:${scope.id}`);
    return { ...r, budget: state ? toBudgetRemaining(state) : null };
  });
}

const keyScope = (k: KeyRecord): ScopeRef => ({ kind: 'key', id: k.tokenHash });
const teamScope = (t: TeamRecord): ScopeRef => ({ kind: 'team', id: t.teamId });
const userScope = (u: UserRecord): ScopeRef => ({ kind: 'user', id: u.userId });

/**
 * Keys: `guard.keys`. Records as stored (the key itself is never stored: `tokenHash` is its id).
 * @example const keys = await guard.keys.list({ teamId: 'frontend' }); // [{ tokenHash, keyAlias, budget: { spend, remaining, ... } }]
 */
export class KeyQueries {
  constructor(private readonly guard: StoreReader) {}

  /** One key by the key (`sk-...`) or its hash; `null` when there is none. */
  async get(keyOrHash: string): Promise<WithBudget<KeyRecord> | null> {
    return this.guard.read('key query', async (storage) => {
      const key = await storage.getKey(keyHashFromKeyOrHash(keyOrHash));
      return key ? ((await withBudgets(this.guard, storage, [key], keyScope))[0] ?? null) : null;
    });
  }

  /** Every key, or those of a user and/or a team, oldest first. */
  async list(filter: { userId?: string; teamId?: string } = {}): Promise<WithBudget<KeyRecord>[]> {
    return this.guard.read('key query', async (storage) =>
      withBudgets(this.guard, storage, await storage.listKeys(filter), keyScope),
    );
  }
}

/** Teams: `guard.teams`. */
export class TeamQueries {
  constructor(private readonly guard: StoreReader) {}

  /** One team by id or, when exactly one team has it, by alias; `null` when there is none. */
  async get(idOrAlias: string): Promise<WithBudget<TeamRecord> | null> {
    return this.guard.read('team query', async (storage) => {
      let team = await storage.getTeam(idOrAlias);
      if (!team) {
        const byAlias = await storage.findTeamsByAlias(idOrAlias);
        team = byAlias.length === 1 ? byAlias[0]! : null;
      }
      return team ? ((await withBudgets(this.guard, storage, [team], teamScope))[0] ?? null) : null;
    });
  }

  /** Every team, or those a user is a member of, oldest first. */
  async list(filter: { userId?: string } = {}): Promise<WithBudget<TeamRecord>[]> {
    return this.guard.read('team query', async (storage) =>
      withBudgets(this.guard, storage, await storage.listTeams(filter), teamScope),
    );
  }
}

/** Users: `guard.users`. */
export class UserQueries {
  constructor(private readonly guard: StoreReader) {}

  async get(userId: string): Promise<WithBudget<UserRecord> | null> {
    return this.guard.read('user query', async (storage) => {
      const user = await storage.getUser(userId);
      return user ? ((await withBudgets(this.guard, storage, [user], userScope))[0] ?? null) : null;
    });
  }

  /** Every user, or the members of a team. */
  async list(filter: { teamId?: string } = {}): Promise<WithBudget<UserRecord>[]> {
    return this.guard.read('user query', async (storage) =>
      withBudgets(this.guard, storage, await storage.listUsers(filter), userScope),
    );
  }
}
