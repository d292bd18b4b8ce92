import * as z from 'zod';
import { SpendGuardError } from '../errors.js';
import { INPUT_LIMITS, storableText } from '../input-hygiene.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import type { ScopeRef, SpendStorage, TeamRecord } from '../storage/storage-contract.js';
import { type Caller, forbidden, type RouteAccess } from './caller.js';
import { indexStates, type MemberJson, ok, teamJson } from './entity-json.js';
import type { Handler, ManagementApi, ManagementRequest } from './management-types.js';

/**
 * `GET /v2/team/list`: LiteLLM's paged team list (`list_team_v2` in its team_endpoints.py):
 * `{ teams, total, page, page_size, total_pages }`, filtered by `user_id` (the teams the user is a
 * member of), `team_id` (exact) and `team_alias` (part of it, any case), sorted by `sort_by`
 * (`team_id`, `team_alias` or `created_at`) in `sort_order` (`asc` unless `desc`), else newest first.
 *
 * Who may list: the master key every team; any other key only the teams of its own user (LiteLLM
 * defaults `user_id` to the caller's). Here a key asking for another user's teams is refused (403),
 * and a key with no user has no teams to list (403), where LiteLLM would list every team.
 */

const filter = (max: number) => storableText(max).min(1, 'must not be empty');

export const teamListV2QuerySchema = z.object({
  user_id: filter(INPUT_LIMITS.idLength).optional(),
  team_id: filter(INPUT_LIMITS.idLength).optional(),
  team_alias: filter(INPUT_LIMITS.nameLength).optional(),
  page: z.coerce.number({ error: 'must be a page number' }).int('must be a whole number').min(1).default(1),
  page_size: z.coerce
    .number({ error: 'must be a page size' })
    .int('must be a whole number')
    .min(1, 'must be at least 1')
    .max(100, 'must be at most 100')
    .default(10),
  sort_by: z
    .enum(['team_id', 'team_alias', 'created_at'], {
      error: "must be 'team_id', 'team_alias' or 'created_at'",
    })
    .optional(),
  sort_order: z.enum(['asc', 'desc'], { error: "must be 'asc' or 'desc'" }).optional(),
});

export function teamPageRoutes(
  api: ManagementApi,
  membersOf: (storage: SpendStorage, teamId: string) => Promise<MemberJson[]>,
): Record<string, { access: RouteAccess; handler: Handler }> {
  return {
    'GET /v2/team/list': { access: 'self', handler: (r, c, s) => teamListV2(api, membersOf, r, c, s) },
  };
}

async function teamListV2(
  api: ManagementApi,
  membersOf: (storage: SpendStorage, teamId: string) => Promise<MemberJson[]>,
  req: ManagementRequest,
  caller: Caller,
  storage: SpendStorage,
): Promise<GuardResponse> {
  const q = api.parseQuery(req, teamListV2QuerySchema);
  let userId = q.user_id;
  if (caller.role !== 'proxy_admin') {
    if (!caller.userId) throw forbidden('this key belongs to no user, so to no team.', 'user_id');
    if (userId !== undefined && userId !== caller.userId)
      throw forbidden("only the master key can list another user's teams.", 'user_id');
    userId = caller.userId;
  }
  if (userId !== undefined && !(await storage.getUser(userId))) {
    throw new SpendGuardError('NOT_FOUND', `User not found, passed user_id=${userId}`, { param: 'user_id' });
  }
  let teams = await storage.listTeams({ userId });
  if (q.team_id !== undefined) {
    teams = teams.filter((t) => t.teamId === q.team_id);
    if (userId !== undefined && teams.length === 0) {
      throw new SpendGuardError('NOT_FOUND', `User is not a member of team_id=${q.team_id}`, {
        param: 'team_id',
      });
    }
  }
  if (q.team_alias !== undefined) {
    const part = q.team_alias.toLowerCase();
    teams = teams.filter((t) => t.teamAlias?.toLowerCase().includes(part));
  }
  teams.sort(order(q.sort_by, q.sort_order));
  const page = teams.slice((q.page - 1) * q.page_size, q.page * q.page_size);
  const scopes = page.map((t): ScopeRef => ({ kind: 'team', id: t.teamId }));
  const [states, limits, members] = await Promise.all([
    storage.getBudgets(scopes, api.now()),
    storage.getRateLimits(scopes),
    Promise.all(page.map((t) => membersOf(storage, t.teamId))),
  ]);
  const byState = indexStates(states);
  const byLimits = new Map(limits.map((l) => [l.scope.id, l.limits]));
  return ok({
    teams: page.map((t, i) =>
      teamJson(t, byState.get(`team:${t.teamId}`) ?? null, members[i], byLimits.get(t.teamId) ?? null),
    ),
    total: teams.length,
    page: q.page,
    page_size: q.page_size,
    total_pages: Math.ceil(teams.length / q.page_size),
  });
}

/** LiteLLM's order: `sort_by` ascending unless `sort_order=desc`, else newest first; ties by team id. */
function order(
  by: 'team_id' | 'team_alias' | 'created_at' | undefined,
  direction: 'asc' | 'desc' | undefined,
): (a: TeamRecord, b: TeamRecord) => number {
  const sign = by === undefined ? -1 : direction === 'desc' ? -1 : 1;
  const key = (t: TeamRecord): string | number =>
    by === 'team_id' ? t.teamId : by === 'team_alias' ? (t.teamAlias ?? '') : t.createdAt.getTime();
  return (a, b) => {
    const x = key(a);
    const y = key(b);
    const c = x < y ? -1 : x > y ? 1 : 0;
    return c !== 0 ? sign * c : a.teamId < b.teamId ? -1 : a.teamId > b.teamId ? 1 : 0;
  };
}
