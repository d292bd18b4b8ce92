import { rateJson, spendLogJson } from '../admin/entity-json.js';
import { keyHashFromKeyOrHash } from '../keys.js';
import { nanoToUsd } from '../money.js';
import { budgetEntry } from '../queries.js';
import type {
  KeyRecord,
  ScopeRef,
  SpendLogRecord,
  SpendReportFilters,
  SpendStorage,
} from '../storage/storage-contract.js';
import { utcDay } from '../storage/storage-contract.js';

const DAY_MS = 86_400_000;
/** Days of spend a team's or key's page charts. */
export const ENTITY_DAYS = 30;
/** Days the burn rate averages over (as the budgets overview's default). */
const BURN_DAYS = 7;
const TOP_MODELS = 5;
const RECENT_CALLS = 20;

/** The names a person reads for the ids in some spend logs: team alias, key alias, user email. */
export interface LogNames {
  teams: Map<string, string | null>;
  keys: Map<string, string | null>;
  users: Map<string, string | null>;
}

/** Looks up the names of the teams, keys and users these logs name, each once, in parallel. */
export async function namesForLogs(storage: SpendStorage, logs: SpendLogRecord[]): Promise<LogNames> {
  const names: LogNames = { teams: new Map(), keys: new Map(), users: new Map() };
  const distinct = (pick: (l: SpendLogRecord) => string | null) =>
    [...new Set(logs.map(pick))].filter((v): v is string => !!v);
  await Promise.all([
    ...distinct((l) => l.teamId).map(async (id) =>
      names.teams.set(id, (await storage.getTeam(id))?.teamAlias ?? null),
    ),
    ...distinct((l) => l.apiKeyHash).map(async (id) =>
      names.keys.set(id, keyLabel(await storage.getKey(id))),
    ),
    ...distinct((l) => l.userId).map(async (id) =>
      names.users.set(id, (await storage.getUser(id))?.userEmail ?? null),
    ),
  ]);
  return names;
}

/** A spend log as the dashboard shows it: LiteLLM's fields plus the names of its team, key and user. */
export function logView(log: SpendLogRecord, names?: LogNames) {
  return {
    ...spendLogJson(log),
    estimated: log.estimated,
    latency_ms: log.endTime.getTime() - log.startTime.getTime(),
    team_alias: log.teamId ? (names?.teams.get(log.teamId) ?? null) : null,
    key_alias: names?.keys.get(log.apiKeyHash) ?? null,
    user_email: log.userId ? (names?.users.get(log.userId) ?? null) : null,
  };
}

function keyLabel(k: KeyRecord | null): string | null {
  return k ? (k.keyAlias ?? k.keyName) : null;
}

/**
 * A team's or a key's page: its record, budget with burn rate and projected run-out, limits, spend per
 * day over the last ENTITY_DAYS days, top models and recent calls. From the rollups and one indexed
 * read of the newest logs; `null` when there is no such team or key.
 */
export async function entityView(kind: 'team' | 'key', rawId: string, storage: SpendStorage, now: Date) {
  let scope: ScopeRef;
  let filters: SpendReportFilters;
  let record: Record<string, unknown>;
  let name: string;
  let keys: Record<string, unknown>[] | undefined;
  if (kind === 'team') {
    const team = await storage.getTeam(rawId);
    if (!team) return null;
    scope = { kind: 'team', id: team.teamId };
    filters = { teamIds: [team.teamId] };
    name = team.teamAlias ?? team.teamId;
    record = {
      team_id: team.teamId,
      team_alias: team.teamAlias,
      blocked: team.blocked,
      models: team.models,
      created_at: team.createdAt.toISOString(),
    };
    const teamKeys = await storage.listKeys({ teamId: team.teamId });
    keys = teamKeys.map((k) => ({
      token: k.tokenHash,
      key_alias: k.keyAlias,
      key_name: k.keyName,
      blocked: k.blocked,
    }));
  } else {
    const key = await storage.getKey(keyHashFromKeyOrHash(rawId));
    if (!key) return null;
    scope = { kind: 'key', id: key.tokenHash };
    filters = { apiKeyHashes: [key.tokenHash] };
    name = key.keyAlias ?? key.keyName;
    const team = key.teamId ? await storage.getTeam(key.teamId) : null;
    const user = key.userId ? await storage.getUser(key.userId) : null;
    record = {
      token: key.tokenHash,
      key_name: key.keyName,
      key_alias: key.keyAlias,
      team_id: key.teamId,
      team_alias: team?.teamAlias ?? null,
      user_id: key.userId,
      user_email: user?.userEmail ?? null,
      blocked: key.blocked,
      models: key.models,
      tags: key.tags,
      expires: key.expiresAt?.toISOString() ?? null,
      created_at: key.createdAt.toISOString(),
    };
  }
  const to = utcDay(now);
  const from = utcDay(new Date(now.getTime() - (ENTITY_DAYS - 1) * DAY_MS));
  const burnFrom = utcDay(new Date(now.getTime() - (BURN_DAYS - 1) * DAY_MS));
  const [states, limits, daily, models, recent] = await Promise.all([
    storage.getBudgets([scope], now),
    storage.getRateLimits([scope]),
    storage.spendReport({ fromDay: from, toDay: to, groupBy: ['day'], filters }),
    storage.spendReport({ fromDay: from, toDay: to, groupBy: ['model'], filters }),
    storage.querySpendLogs({
      ...(kind === 'team' ? { teamId: scope.id } : { apiKeyHash: scope.id }),
      limit: RECENT_CALLS,
    }),
  ]);
  const state = states[0];
  const burnNano = daily.filter((r) => (r.day ?? '') >= burnFrom).reduce((s, r) => s + r.spendNano, 0);
  // The days of the burn window: the full days before today plus the elapsed part of today.
  const elapsedDays = BURN_DAYS - 1 + (now.getTime() - Date.parse(`${to}T00:00:00.000Z`)) / DAY_MS;
  const entry =
    state && state.maxBudgetNano !== null ? budgetEntry(state, name, burnNano, elapsedDays, now) : null;
  const names = await namesForLogs(storage, recent);
  const rate = limits[0]?.limits ?? null;
  return {
    kind,
    name,
    record,
    keys,
    spend: state ? nanoToUsd(state.spendNano) : 0,
    budget: entry
      ? {
          ...entry,
          projectedRunOut: entry.projectedRunOut?.toISOString() ?? null,
          resetAt: entry.resetAt?.toISOString() ?? null,
          burn_days: BURN_DAYS,
        }
      : null,
    limits: {
      ...rateJson(rate),
      model_rpm_limit: rate?.modelRpmLimit ?? {},
      model_tpm_limit: rate?.modelTpmLimit ?? {},
    },
    from,
    to,
    daily: daily.map((r) => ({ day: r.day, spend: nanoToUsd(r.spendNano), requests: r.requests })),
    top_models: models
      .sort((a, b) => b.spendNano - a.spendNano || ((a.model ?? '') < (b.model ?? '') ? -1 : 1))
      .slice(0, TOP_MODELS)
      .map((r) => ({
        model: r.model,
        spend: nanoToUsd(r.spendNano),
        requests: r.requests,
        tokens: r.promptTokens + r.completionTokens,
      })),
    recent: recent.map((l) => logView(l, names)),
  };
}
