import { randomUUID } from 'node:crypto';
import { SpendGuardError } from '../errors.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import {
  type BudgetInit,
  type EntityInsert,
  type MemberRole,
  memberScopeId,
  type RateLimits,
  type ScopeChanges,
  type ScopeRef,
  type SpendStorage,
  type TeamPatch,
  type TeamRecord,
  type UserPatch,
  type UserRecord,
} from '../storage/storage-contract.js';
import { assertManagesTeam, type Caller } from './caller.js';
import {
  indexStates,
  type MemberJson,
  ok,
  rateJson,
  rateLimitsFrom,
  setsRateLimits,
  teamJson,
  userJson,
} from './entity-json.js';
import type { ManagementApi, ManagementRequest } from './management-types.js';
import {
  memberAddSchema,
  memberDeleteSchema,
  memberUpdateSchema,
  teamDeleteSchema,
  teamListQuerySchema,
  teamUpdateSchema,
  userDeleteSchema,
  userListQuerySchema,
  userUpdateSchema,
} from './schemas.js';
import {
  assertBudgetsWithin,
  assertMayTakeIn,
  assertRateLimitsWithin,
  assertTeamSettingsUnchanged,
  isBound,
  teamBounds,
} from './team-bounds.js';

/**
 * LiteLLM's team, member and user lifecycle routes (`/team/update|delete|list`,
 * `/team/member_add|member_update|member_delete`, `/user/update|delete|list`). Deleting a team or a
 * user deletes its keys, as LiteLLM does; spend logs and rollups always stay.
 */
export class TeamUserRoutes {
  constructor(private readonly api: ManagementApi) {}

  private get guard() {
    return this.api.guardInstance;
  }

  /** A team's members as `members_with_roles` lists them (with each user's email). */
  async membersOf(storage: SpendStorage, teamId: string): Promise<MemberJson[]> {
    const members = await storage.listMembers({ teamId });
    const users = await Promise.all(members.map((m) => storage.getUser(m.userId)));
    return members.map((m, i) => ({
      user_id: m.userId,
      user_email: users[i]?.userEmail ?? null,
      role: m.role,
    }));
  }

  /** The budget definition a body sets (only the fields it names). */
  private budgetPatch(b: {
    max_budget?: number | null;
    soft_budget?: number | null;
    budget_duration?: string | null;
  }): Partial<BudgetInit> {
    const budget: Partial<BudgetInit> = {};
    if (b.max_budget !== undefined)
      budget.maxBudgetNano = this.api.budgetInit(b.max_budget, null).maxBudgetNano;
    if (b.soft_budget !== undefined) {
      budget.softBudgetNano = this.api.budgetInit(null, null, b.soft_budget).softBudgetNano;
    }
    if (b.budget_duration !== undefined) {
      const { budgetDuration, budgetResetAt } = this.api.budgetInit(null, b.budget_duration);
      Object.assign(budget, { budgetDuration, budgetResetAt });
    }
    return budget;
  }

  async teamUpdate(req: ManagementRequest, caller: Caller, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, teamUpdateSchema);
    const team = await this.api.resolveTeam(storage, b.team_id);
    assertManagesTeam(caller, team.teamId, 'update this team');
    if (isBound(caller)) {
      const bounds = await teamBounds(storage, team, this.guard.now());
      const [state] = await storage.getBudgets([{ kind: 'team', id: team.teamId }], this.guard.now());
      assertTeamSettingsUnchanged(
        {
          ...bounds,
          maxNano: state?.maxBudgetNano ?? null,
          softNano: state?.softBudgetNano ?? null,
          duration: state?.budgetDuration ?? null,
        },
        team,
        b,
      );
    }
    const patch: TeamPatch = {};
    if (b.team_alias !== undefined) patch.teamAlias = b.team_alias;
    if (b.models !== undefined) patch.models = b.models;
    if (b.metadata !== undefined) patch.metadata = b.metadata;
    if (b.blocked !== undefined) patch.blocked = b.blocked;
    const scope: ScopeRef = { kind: 'team', id: team.teamId };
    const { limits, also } = await this.rateLimitChanges(storage, scope, b);
    const updated = await storage.updateTeam(team.teamId, patch, this.budgetPatch(b), also);
    this.guard.invalidateAllKeys(); // cached keys carry their team (models, blocked, rate limits)
    if (!updated)
      throw new SpendGuardError('NOT_FOUND', `Team not found: ${b.team_id}`, { param: 'team_id' });
    const [state] = await storage.getBudgets([scope], this.guard.now());
    return ok({
      team_id: team.teamId,
      data: teamJson(updated, state ?? null, await this.membersOf(storage, team.teamId), limits),
    });
  }

  async teamDelete(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, teamDeleteSchema);
    const teams = await Promise.all(b.team_ids.map((id) => storage.getTeam(id)));
    const missing = b.team_ids.filter((_, i) => !teams[i]);
    if (missing.length > 0) {
      throw new SpendGuardError('NOT_FOUND', `Teams not found: ${missing.join(', ')}; nothing was deleted`, {
        param: 'team_ids',
      });
    }
    // All of them in one transaction, or none (one deleted meanwhile: nothing was deleted).
    const deleted = await storage.deleteTeams(b.team_ids);
    this.guard.invalidateAllKeys();
    if (!deleted) throw new SpendGuardError('NOT_FOUND', 'A team was deleted meanwhile; nothing was deleted');
    return ok({ deleted_teams: b.team_ids, deleted_keys: deleted.deletedKeys });
  }

  async teamList(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, teamListQuerySchema);
    const teams = await storage.listTeams({ userId: q.user_id });
    const states = indexStates(
      await storage.getBudgets(
        teams.map((t): ScopeRef => ({ kind: 'team', id: t.teamId })),
        this.guard.now(),
      ),
    );
    const members = await Promise.all(teams.map((t) => this.membersOf(storage, t.teamId)));
    return ok(teams.map((t, i) => teamJson(t, states.get(`team:${t.teamId}`) ?? null, members[i])));
  }

  /** A user by id, or by email when exactly one user has it. @internal */
  async userByRef(
    storage: SpendStorage,
    ref: { user_id?: string | null; user_email?: string | null },
  ): Promise<UserRecord | null> {
    if (ref.user_id) return storage.getUser(ref.user_id);
    const byEmail = (await storage.listUsers({})).filter((u) => u.userEmail === ref.user_email);
    if (byEmail.length > 1) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `${byEmail.length} users have user_email '${ref.user_email}'; pass the user_id`,
        {
          param: 'user_email',
        },
      );
    }
    return byEmail[0] ?? null;
  }

  /**
   * LiteLLM's `/team/member_add`: one member or a list, each by user id or email (a user not found is
   * created, as LiteLLM does), with role `user` unless told; `max_budget_in_team` caps each member's
   * spend in this team (a `member` budget counter).
   */
  async memberAdd(req: ManagementRequest, caller: Caller, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, memberAddSchema);
    const team = await this.api.resolveTeam(storage, b.team_id);
    assertManagesTeam(caller, team.teamId, 'add members to this team');
    const now = this.guard.now();
    if (isBound(caller)) await this.assertMemberWithinTeam(storage, team, b);
    const writes: EntityInsert[] = [];
    const users: UserRecord[] = [];
    const budget = this.api.budgetInit(b.max_budget_in_team, null);
    // A member's own rate limits in this team (rpm_limit, tpm_limit, max_parallel_requests).
    const rateLimits = rateLimitsFrom(b);
    for (const m of Array.isArray(b.member) ? b.member : [b.member]) {
      let user = await this.userByRef(storage, m);
      if (isBound(caller)) assertMayTakeIn(caller, m, user);
      if (!user) {
        user = {
          userId: m.user_id ?? randomUUID(),
          userEmail: m.user_email ?? null,
          userRole: 'internal_user',
          teams: [],
          models: [],
          metadata: {},
          createdAt: now,
        };
        writes.push({ type: 'user', record: user, budget: this.api.budgetInit(null, null) });
      }
      if (user.teams.includes(team.teamId) || users.some((u) => u.userId === user.userId)) {
        throw new SpendGuardError(
          'CONFLICT',
          `User '${user.userId}' is already a member of team '${team.teamId}'`,
          {
            param: 'member',
          },
        );
      }
      users.push({ ...user, teams: [...user.teams, team.teamId] });
      writes.push({
        type: 'member',
        record: { teamId: team.teamId, userId: user.userId, role: m.role ?? 'user', createdAt: now },
        budget,
        rateLimits,
      });
    }
    await storage.insert(writes);
    this.guard.invalidateAllKeys();
    const [state] = await storage.getBudgets([{ kind: 'team', id: team.teamId }], now);
    const maxInTeam = budget.maxBudgetNano === null ? null : budget.maxBudgetNano / 1e9;
    return ok({
      ...teamJson(team, state ?? null, await this.membersOf(storage, team.teamId)),
      updated_users: users.map((u) => userJson(u, null)),
      updated_team_memberships: users.map((u) => ({
        team_id: team.teamId,
        user_id: u.userId,
        max_budget_in_team: maxInTeam,
        ...rateJson(rateLimits),
      })),
    });
  }

  /** A team admin's member budget and rate limits within the team's own (see `team-bounds.ts`). */
  private async assertMemberWithinTeam(
    storage: SpendStorage,
    team: TeamRecord,
    b: Parameters<typeof assertBudgetsWithin>[1] & Parameters<typeof assertRateLimitsWithin>[1],
  ): Promise<void> {
    const bounds = await teamBounds(storage, team, this.guard.now());
    assertBudgetsWithin(bounds, b);
    assertRateLimitsWithin(bounds, b);
  }

  /** The member a body names, in a team the caller manages. */
  private async memberOf(
    storage: SpendStorage,
    caller: Caller,
    b: { team_id: string; user_id?: string; user_email?: string },
    what: string,
  ) {
    const team = await this.api.resolveTeam(storage, b.team_id);
    assertManagesTeam(caller, team.teamId, what);
    const user = await this.userByRef(storage, b);
    const member = user
      ? (await storage.listMembers({ teamId: team.teamId, userId: user.userId }))[0]
      : undefined;
    if (!user || !member) {
      throw new SpendGuardError(
        'NOT_FOUND',
        `User '${b.user_id ?? b.user_email}' is not a member of team '${team.teamId}'`,
        { param: b.user_id ? 'user_id' : 'user_email' },
      );
    }
    return { team, user, member };
  }

  async memberUpdate(req: ManagementRequest, caller: Caller, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, memberUpdateSchema);
    const { team, user } = await this.memberOf(storage, caller, b, 'change members of this team');
    if (isBound(caller)) await this.assertMemberWithinTeam(storage, team, b);
    const patch: { role?: MemberRole } = b.role === undefined ? {} : { role: b.role };
    const budget: Partial<BudgetInit> =
      b.max_budget_in_team === undefined
        ? {}
        : { maxBudgetNano: this.api.budgetInit(b.max_budget_in_team, null).maxBudgetNano };
    const scope: ScopeRef = { kind: 'member', id: memberScopeId(team.teamId, user.userId) };
    // The rate limits go in the membership's own transaction, all or nothing with it.
    const { also } = await this.rateLimitChanges(storage, scope, b);
    const member = await storage.updateMember(team.teamId, user.userId, patch, budget, also);
    if (!member) throw new SpendGuardError('NOT_FOUND', `User '${user.userId}' left team '${team.teamId}'`);
    this.guard.invalidateAllKeys();
    const [[state], [limits]] = await Promise.all([
      storage.getBudgets([scope], this.guard.now()),
      storage.getRateLimits([scope]),
    ]);
    return ok({
      team_id: team.teamId,
      user_id: user.userId,
      user_email: user.userEmail,
      role: member.role,
      max_budget_in_team: state?.maxBudgetNano == null ? null : state.maxBudgetNano / 1e9,
      spend: state ? state.spendNano / 1e9 : 0,
      ...rateJson(limits?.limits ?? null),
    });
  }

  /** Removes a member and, as LiteLLM does, the user's keys in that team. */
  async memberDelete(req: ManagementRequest, caller: Caller, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, memberDeleteSchema);
    const { team, user } = await this.memberOf(storage, caller, b, 'remove members of this team');
    const deleted = await storage.deleteMember(team.teamId, user.userId);
    this.guard.invalidateAllKeys();
    return ok({ team_id: team.teamId, user_id: user.userId, deleted_keys: deleted?.deletedKeys ?? [] });
  }

  async userUpdate(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, userUpdateSchema);
    const user = await this.userByRef(storage, b);
    if (!user) {
      throw new SpendGuardError('NOT_FOUND', `User not found: ${b.user_id ?? b.user_email}`, {
        param: b.user_id ? 'user_id' : 'user_email',
      });
    }
    if (b.spend !== undefined) {
      const state = await this.api.setSpendAlone(storage, { kind: 'user', id: user.userId }, b, [
        'user_id',
        'user_email',
      ]);
      const [limits] = await storage.getRateLimits([{ kind: 'user', id: user.userId }]);
      return ok(userJson(user, state, limits?.limits ?? null));
    }
    const patch: UserPatch = {};
    // Looked up by email, the email is the key, not a change.
    if (b.user_id && b.user_email !== undefined) patch.userEmail = b.user_email;
    if (b.user_role !== undefined) patch.userRole = b.user_role;
    if (b.models !== undefined) patch.models = b.models;
    if (b.metadata !== undefined) patch.metadata = b.metadata;
    const scope: ScopeRef = { kind: 'user', id: user.userId };
    const { limits, also } = await this.rateLimitChanges(storage, scope, b);
    const updated = await storage.updateUser(user.userId, patch, this.budgetPatch(b), also);
    this.guard.invalidateAllKeys();
    if (!updated)
      throw new SpendGuardError('NOT_FOUND', `User not found: ${user.userId}`, { param: 'user_id' });
    const [state] = await storage.getBudgets([scope], this.guard.now());
    return ok(userJson(updated, state ?? null, limits));
  }

  /**
   * The rate limits a team or user update sets (`rpm_limit`, `tpm_limit`, `max_parallel_requests`; a
   * limit left out stays, `null` removes it), as changes written in the record's own transaction, whose
   * change record makes every instance reload its cached keys. `limits`: the scope's after the update.
   */
  private async rateLimitChanges(
    storage: SpendStorage,
    scope: ScopeRef,
    b: Parameters<typeof setsRateLimits>[0],
  ): Promise<{ limits: RateLimits | null; also: ScopeChanges | undefined }> {
    const [current] = await storage.getRateLimits([scope]);
    if (!setsRateLimits(b)) return { limits: current?.limits ?? null, also: undefined };
    const limits = rateLimitsFrom(b, current?.limits ?? null);
    return { limits, also: { now: this.guard.now(), rateLimits: { scope, limits } } };
  }

  async userDelete(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, userDeleteSchema);
    const users = await Promise.all(b.user_ids.map((id) => storage.getUser(id)));
    const missing = b.user_ids.filter((_, i) => !users[i]);
    if (missing.length > 0) {
      throw new SpendGuardError('NOT_FOUND', `Users not found: ${missing.join(', ')}; nothing was deleted`, {
        param: 'user_ids',
      });
    }
    // All of them in one transaction, or none (one deleted meanwhile: nothing was deleted).
    const deleted = await storage.deleteUsers(b.user_ids);
    this.guard.invalidateAllKeys();
    if (!deleted) throw new SpendGuardError('NOT_FOUND', 'A user was deleted meanwhile; nothing was deleted');
    return ok({ deleted_users: b.user_ids, deleted_keys: deleted.deletedKeys });
  }

  /** LiteLLM's `/user/list`: `{ users, total, page, page_size, total_pages }`, `page_size` default 25. */
  async userList(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, userListQuerySchema);
    const ids = q.user_ids ? new Set(q.user_ids.split(',').map((s) => s.trim())) : null;
    const all = (await storage.listUsers(q.team ? { teamId: q.team } : {})).filter(
      (u) => (!ids || ids.has(u.userId)) && (!q.role || u.userRole === q.role),
    );
    const page = q.page ?? 1;
    const pageSize = q.page_size ?? 25;
    const users = all.slice((page - 1) * pageSize, page * pageSize);
    const states = indexStates(
      await storage.getBudgets(
        users.map((u): ScopeRef => ({ kind: 'user', id: u.userId })),
        this.guard.now(),
      ),
    );
    return ok({
      users: users.map((u) => userJson(u, states.get(`user:${u.userId}`) ?? null)),
      total: all.length,
      page,
      page_size: pageSize,
      total_pages: Math.ceil(all.length / pageSize),
    });
  }
}
