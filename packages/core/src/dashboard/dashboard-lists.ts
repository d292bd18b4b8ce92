import { SpendGuardError } from '../errors.js';
import { nanoToUsd } from '../money.js';
import type {
  BudgetState,
  CustomerRecord,
  KeyRecord,
  ScopeRef,
  SpendStorage,
  TagRecord,
  TeamRecord,
  UserRecord,
} from '../storage/storage-contract.js';
import { utcDay } from '../storage/storage-contract.js';

/** The entity lists the dashboard pages, counts, searches and sorts: `GET ui/api/list/<kind>`. */
export const LIST_KINDS = ['keys', 'teams', 'users', 'customers', 'tags'] as const;
export type ListKind = (typeof LIST_KINDS)[number];

/** The query parameters a list takes; any other is refused with a 400 that names it. */
const LIST_PARAMS = new Set(['q', 'sort', 'dir', 'page', 'size']);
const DEFAULT_PAGE_SIZE = 25;
/** How far back the key list looks for the day a key was last used. */
const LAST_USED_DAYS = 366;
const MAX_PAGE_SIZE = 100;

type Value = string | number | null;

/** One row of a list before paging: what it sorts and searches on, and the JSON it shows. */
interface Item {
  id: string;
  sort: Record<string, Value>;
  /** Lower-cased text the search matches a substring of. */
  text: string;
  json: Record<string, unknown>;
}

interface ListSpec {
  /** Sort columns; the first is the default (with `defaultDir`). */
  sorts: string[];
  defaultDir: 'asc' | 'desc';
  load(storage: SpendStorage, now: Date): Promise<Item[]>;
  /** Adds what only the page's rows need (one indexed read each), after paging. */
  decorate?(rows: Record<string, unknown>[], storage: SpendStorage, now: Date): Promise<void>;
}

/** The budget counter's figures a row shows (`null` where the scope has no counter or no cap). */
function budgetFigures(state: BudgetState | undefined) {
  const max = state?.maxBudgetNano ?? null;
  const spendNano = state?.spendNano ?? 0;
  return {
    spend: nanoToUsd(spendNano),
    max_budget: max === null ? null : nanoToUsd(max),
    // A cap of 0 is fully used whatever the spend.
    used_fraction: max === null ? null : max > 0 ? spendNano / max : 1,
    budget_duration: state?.budgetDuration ?? null,
    budget_reset_at: state?.budgetResetAt?.toISOString() ?? null,
  };
}

async function budgetsOf(storage: SpendStorage, scopes: ScopeRef[], now: Date) {
  const states = scopes.length ? await storage.getBudgets(scopes, now) : [];
  return new Map(states.map((s) => [`${s.scope.kind}:${s.scope.id}`, s]));
}

const lower = (...parts: (string | null | undefined)[]) =>
  parts
    .filter((p): p is string => typeof p === 'string')
    .join('\n')
    .toLowerCase();

const SPECS: Record<ListKind, ListSpec> = {
  keys: {
    sorts: ['created', 'name', 'team', 'user', 'spend', 'budget', 'used'],
    defaultDir: 'desc',
    async load(storage, now) {
      const [keys, teams] = await Promise.all([storage.listKeys({}), storage.listTeams({})]);
      const teamAlias = new Map(teams.map((t) => [t.teamId, t.teamAlias]));
      const states = await budgetsOf(
        storage,
        keys.map((k) => ({ kind: 'key', id: k.tokenHash })),
        now,
      );
      return keys.map((k: KeyRecord) => {
        const b = budgetFigures(states.get(`key:${k.tokenHash}`));
        const alias = k.teamId ? (teamAlias.get(k.teamId) ?? null) : null;
        const name = k.keyAlias ?? k.keyName;
        return {
          id: k.tokenHash,
          sort: {
            created: k.createdAt.getTime(),
            name,
            team: k.teamId ? (alias ?? k.teamId) : null,
            user: k.userId,
            spend: b.spend,
            budget: b.max_budget,
            used: b.used_fraction,
          },
          text: lower(k.keyAlias, k.keyName, k.tokenHash, k.userId, k.teamId, alias, ...k.tags),
          json: {
            token: k.tokenHash,
            key_name: k.keyName,
            key_alias: k.keyAlias,
            user_id: k.userId,
            team_id: k.teamId,
            team_alias: alias,
            blocked: k.blocked,
            tags: k.tags,
            expires: k.expiresAt?.toISOString() ?? null,
            created_at: k.createdAt.toISOString(),
            ...b,
          },
        };
      });
    },
    async decorate(rows, storage, now) {
      // The last UTC day each key on the page was used, from the daily rollups (one query, O(days x
      // keys)). The newest log per key would be exact to the second, but that read sorts every log of
      // the key on SQLite (its index has no request_id), ~10 ms a key on the 100,000-call demo.
      const hashes = rows.map((row) => row.token as string);
      if (hashes.length === 0) return;
      const days = await storage.spendReport({
        fromDay: utcDay(new Date(now.getTime() - (LAST_USED_DAYS - 1) * 86_400_000)),
        toDay: utcDay(now),
        groupBy: ['key', 'day'],
        filters: { apiKeyHashes: hashes },
      });
      const last = new Map<string, string>();
      for (const r of days) {
        const prev = last.get(r.apiKeyHash!);
        if (r.day && (!prev || r.day > prev)) last.set(r.apiKeyHash!, r.day);
      }
      for (const row of rows) row.last_used_day = last.get(row.token as string) ?? null;
    },
  },
  teams: {
    sorts: ['name', 'spend', 'budget', 'used', 'keys', 'created'],
    defaultDir: 'asc',
    async load(storage, now) {
      const [teams, keys] = await Promise.all([storage.listTeams({}), storage.listKeys({})]);
      const keyCount = new Map<string, number>();
      for (const k of keys) if (k.teamId) keyCount.set(k.teamId, (keyCount.get(k.teamId) ?? 0) + 1);
      const states = await budgetsOf(
        storage,
        teams.map((t) => ({ kind: 'team', id: t.teamId })),
        now,
      );
      return teams.map((t: TeamRecord) => {
        const b = budgetFigures(states.get(`team:${t.teamId}`));
        return {
          id: t.teamId,
          sort: {
            name: t.teamAlias ?? t.teamId,
            spend: b.spend,
            budget: b.max_budget,
            used: b.used_fraction,
            keys: keyCount.get(t.teamId) ?? 0,
            created: t.createdAt.getTime(),
          },
          text: lower(t.teamId, t.teamAlias),
          json: {
            team_id: t.teamId,
            team_alias: t.teamAlias,
            blocked: t.blocked,
            models: t.models,
            keys: keyCount.get(t.teamId) ?? 0,
            created_at: t.createdAt.toISOString(),
            ...b,
          },
        };
      });
    },
  },
  users: {
    sorts: ['name', 'email', 'role', 'spend', 'budget', 'created'],
    defaultDir: 'asc',
    async load(storage, now) {
      const [users, teams] = await Promise.all([storage.listUsers({}), storage.listTeams({})]);
      const teamAlias = new Map(teams.map((t) => [t.teamId, t.teamAlias]));
      const states = await budgetsOf(
        storage,
        users.map((u) => ({ kind: 'user', id: u.userId })),
        now,
      );
      return users.map((u: UserRecord) => {
        const b = budgetFigures(states.get(`user:${u.userId}`));
        const aliases = u.teams.map((id) => teamAlias.get(id) ?? null);
        return {
          id: u.userId,
          sort: {
            name: u.userId,
            email: u.userEmail,
            role: u.userRole,
            spend: b.spend,
            budget: b.max_budget,
            created: u.createdAt.getTime(),
          },
          text: lower(u.userId, u.userEmail, u.userRole, ...u.teams, ...aliases),
          json: {
            user_id: u.userId,
            user_email: u.userEmail,
            user_role: u.userRole,
            teams: u.teams.map((id, i) => ({ team_id: id, team_alias: aliases[i] })),
            created_at: u.createdAt.toISOString(),
            ...b,
          },
        };
      });
    },
  },
  customers: {
    sorts: ['name', 'alias', 'spend', 'budget', 'created'],
    defaultDir: 'asc',
    async load(storage, now) {
      const customers = await storage.listCustomers();
      const states = await budgetsOf(
        storage,
        customers.map((c) => ({ kind: 'customer', id: c.endUserId })),
        now,
      );
      return customers.map((c: CustomerRecord) => {
        const b = budgetFigures(states.get(`customer:${c.endUserId}`));
        return {
          id: c.endUserId,
          sort: {
            name: c.endUserId,
            alias: c.alias,
            spend: b.spend,
            budget: b.max_budget,
            created: c.createdAt.getTime(),
          },
          text: lower(c.endUserId, c.alias),
          json: {
            user_id: c.endUserId,
            alias: c.alias,
            blocked: c.blocked,
            created_at: c.createdAt.toISOString(),
            ...b,
          },
        };
      });
    },
  },
  tags: {
    sorts: ['name', 'spend', 'budget', 'created'],
    defaultDir: 'asc',
    async load(storage, now) {
      const tags = await storage.listTags();
      const states = await budgetsOf(
        storage,
        tags.map((t) => ({ kind: 'tag', id: t.name })),
        now,
      );
      return tags.map((t: TagRecord) => {
        const b = budgetFigures(states.get(`tag:${t.name}`));
        return {
          id: t.name,
          sort: { name: t.name, spend: b.spend, budget: b.max_budget, created: t.createdAt.getTime() },
          text: lower(t.name, t.description),
          json: { name: t.name, description: t.description, created_at: t.createdAt.toISOString(), ...b },
        };
      });
    },
  },
};

/** A list's query, checked: a parameter it does not take, or a bad value, is a 400 naming it. */
export function parseListQuery(kind: ListKind, q: URLSearchParams) {
  for (const name of q.keys()) {
    if (!LIST_PARAMS.has(name)) {
      throw badRequest(`unknown query parameter ${name}: a list takes q, sort, dir, page, size`, name);
    }
  }
  const spec = SPECS[kind];
  const sort = q.get('sort') || spec.sorts[0]!;
  if (!spec.sorts.includes(sort)) throw badRequest(`sort must be one of ${spec.sorts.join(', ')}`, 'sort');
  const dirParam = q.get('dir');
  if (dirParam && dirParam !== 'asc' && dirParam !== 'desc')
    throw badRequest("dir must be 'asc' or 'desc'", 'dir');
  const dir = (dirParam || (q.get('sort') ? 'asc' : spec.defaultDir)) as 'asc' | 'desc';
  const page = whole(q.get('page'), 'page', 1, 1, Number.MAX_SAFE_INTEGER);
  const size = whole(q.get('size'), 'size', DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE);
  return { q: (q.get('q') ?? '').trim(), sort, dir, page, size };
}

/**
 * One page of a list: searched (a case-insensitive substring of its names and ids), counted, sorted
 * (empty values last whichever the direction, ties by id) and paged, on the server. The storage
 * lists are reads of the entity tables (hundreds of rows, never the spend logs), with the budget
 * counters in one `getBudgets`.
 */
export async function listPage(kind: ListKind, query: URLSearchParams, storage: SpendStorage, now: Date) {
  const o = parseListQuery(kind, query);
  const all = await SPECS[kind].load(storage, now);
  const needle = o.q.toLowerCase();
  const matched = needle ? all.filter((i) => i.text.includes(needle)) : all;
  const sign = o.dir === 'asc' ? 1 : -1;
  matched.sort((a, b) => {
    const c = compareValues(a.sort[o.sort] ?? null, b.sort[o.sort] ?? null, sign);
    return c !== 0 ? c : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
  const pages = Math.max(1, Math.ceil(matched.length / o.size));
  const page = Math.min(o.page, pages);
  const rows = matched.slice((page - 1) * o.size, page * o.size).map((r) => ({ ...r.json }));
  await SPECS[kind].decorate?.(rows, storage, now);
  return {
    kind,
    q: o.q,
    sort: o.sort,
    dir: o.dir,
    sorts: SPECS[kind].sorts,
    page,
    size: o.size,
    pages,
    total: matched.length,
    total_unfiltered: all.length,
    rows,
  };
}

/** `sign` orders present values; an empty value (`null`) sorts after every present one either way. */
export function compareValues(a: Value, b: Value, sign: 1 | -1): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? 1 : -1;
  if (typeof a === 'number' && typeof b === 'number') return (a - b) * sign;
  const x = String(a).toLowerCase();
  const y = String(b).toLowerCase();
  return (x < y ? -1 : x > y ? 1 : 0) * sign;
}

function whole(raw: string | null, param: string, fallback: number, min: number, max: number): number {
  if (raw === null || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw badRequest(`${param} must be a whole number from ${min} to ${max}`, param);
  return n;
}

function badRequest(message: string, param: string): SpendGuardError {
  return new SpendGuardError('BAD_REQUEST', message, { param });
}
