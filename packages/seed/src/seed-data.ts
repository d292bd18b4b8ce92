import { createHash } from 'node:crypto';
import { hashVirtualKey, nextBudgetResetAt, PriceBook, usdToNano } from '@spendguard/core';
import type { EntityInsert, ScopeKind } from '@spendguard/core/storage';

/**
 * The data set, generated purely from `seed`: the same options give the same teams, users, keys and
 * calls, byte for byte, on every machine (a seeded PRNG, no clock, no Math.random).
 */
export interface SeedOptions {
  /**
   * How many calls (spend log rows) to generate.
   * @default 1_000_000
   */
  calls?: number;
  /**
   * Over how many UTC days before `end` the calls are spread.
   * @default 90
   */
  days?: number;
  /**
   * The instant the data set ends at ("now" for its budget periods): no call starts after it.
   * @default the current time, rounded down to the minute
   * @example end: new Date('2026-11-01T00:00:00Z')
   */
  end?: Date;
  /**
   * The PRNG seed.
   * @default 1
   */
  seed?: number;
}

export type ResolvedSeedOptions = Required<SeedOptions>;

export function resolveSeedOptions(options: SeedOptions = {}): ResolvedSeedOptions {
  const calls = options.calls ?? 1_000_000;
  const days = options.days ?? 90;
  const seed = options.seed ?? 1;
  const end = options.end ?? new Date(Math.floor(Date.now() / 60_000) * 60_000);
  if (!Number.isSafeInteger(calls) || calls < 0)
    throw new Error(`seed: calls must be a whole number >= 0, got ${calls}`);
  if (!Number.isSafeInteger(days) || days < 1)
    throw new Error(`seed: days must be a whole number >= 1, got ${days}`);
  if (!Number.isSafeInteger(seed)) throw new Error(`seed: seed must be a whole number, got ${seed}`);
  if (!(end instanceof Date) || Number.isNaN(end.getTime()))
    throw new Error('seed: end must be a valid Date');
  return { calls, days, seed, end };
}

/** A short hash of the options (and of this generator's version): equal fingerprints, equal data. */
export function seedFingerprint(options: ResolvedSeedOptions): string {
  const text = JSON.stringify({ v: GENERATOR_VERSION, ...options, end: options.end.toISOString() });
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

/** Bump whenever the generated data changes, so that stores seeded by an older version are re-seeded. */
const GENERATOR_VERSION = 1;

/** mulberry32: small, fast, and good enough for synthetic data. */
export class Prng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(maxExclusive: number): number {
    return Math.floor(this.next() * maxExclusive);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** Log-normal with this median; `sigma` is the spread of its logarithm. */
  logNormal(median: number, sigma: number): number {
    const u = 1 - this.next();
    const v = this.next();
    const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    return median * Math.exp(sigma * z);
  }
  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    return Math.floor(this.next() * 4294967296);
  }
  hex(chars: number): string {
    let out = '';
    while (out.length < chars) out += hex8(this.u32());
    return out.slice(0, chars);
  }
  /** `count` distinct items, in random order. */
  sample<T>(items: readonly T[], count: number): T[] {
    const copy = [...items];
    for (let i = copy.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [copy[i], copy[j]] = [copy[j]!, copy[i]!];
    }
    return copy.slice(0, Math.min(count, copy.length));
  }
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

/** Cumulative weights, for picking an index in O(log n). */
class Weighted<T> {
  readonly #items: T[];
  readonly #cumulative: number[];
  constructor(entries: Array<[T, number]>) {
    this.#items = entries.map(([item]) => item);
    let sum = 0;
    this.#cumulative = entries.map(([, w]) => {
      sum += w;
      return sum;
    });
  }
  pick(rng: Prng): T {
    const total = this.#cumulative[this.#cumulative.length - 1] ?? 0;
    const x = rng.next() * total;
    let lo = 0;
    let hi = this.#cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#cumulative[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return this.#items[lo]!;
  }
}

/**
 * 30 real models from the price table (each priced by it) and how popular each is. Every name must
 * resolve in core's price table: `buildSeedPlan` throws otherwise.
 */
export const SEED_MODELS: ReadonlyArray<{ model: string; popularity: number; kind: 'chat' | 'embedding' }> = [
  { model: 'gpt-4o-mini', popularity: 30, kind: 'chat' },
  { model: 'gpt-4o', popularity: 14, kind: 'chat' },
  { model: 'gpt-4.1', popularity: 8, kind: 'chat' },
  { model: 'gpt-4.1-mini', popularity: 16, kind: 'chat' },
  { model: 'gpt-4.1-nano', popularity: 6, kind: 'chat' },
  { model: 'o3', popularity: 2, kind: 'chat' },
  { model: 'o4-mini', popularity: 5, kind: 'chat' },
  { model: 'gpt-5', popularity: 6, kind: 'chat' },
  { model: 'gpt-5-mini', popularity: 12, kind: 'chat' },
  { model: 'gpt-5-nano', popularity: 5, kind: 'chat' },
  { model: 'text-embedding-3-small', popularity: 14, kind: 'embedding' },
  { model: 'text-embedding-3-large', popularity: 3, kind: 'embedding' },
  { model: 'claude-sonnet-4-5', popularity: 16, kind: 'chat' },
  { model: 'claude-haiku-4-5', popularity: 10, kind: 'chat' },
  { model: 'claude-opus-4-1', popularity: 1.5, kind: 'chat' },
  { model: 'claude-3-7-sonnet-20250219', popularity: 3, kind: 'chat' },
  { model: 'gemini/gemini-2.5-pro', popularity: 5, kind: 'chat' },
  { model: 'gemini/gemini-2.5-flash', popularity: 10, kind: 'chat' },
  { model: 'gemini/gemini-2.5-flash-lite', popularity: 4, kind: 'chat' },
  { model: 'gemini/gemini-2.0-flash', popularity: 3, kind: 'chat' },
  { model: 'mistral/mistral-large-latest', popularity: 2, kind: 'chat' },
  { model: 'mistral/mistral-small-latest', popularity: 3, kind: 'chat' },
  { model: 'mistral/codestral-latest', popularity: 2, kind: 'chat' },
  { model: 'groq/llama-3.3-70b-versatile', popularity: 3, kind: 'chat' },
  { model: 'groq/llama-3.1-8b-instant', popularity: 3, kind: 'chat' },
  { model: 'deepseek/deepseek-chat', popularity: 3, kind: 'chat' },
  { model: 'deepseek/deepseek-reasoner', popularity: 1, kind: 'chat' },
  { model: 'bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0', popularity: 2, kind: 'chat' },
  { model: 'azure/gpt-4o', popularity: 4, kind: 'chat' },
  { model: 'xai/grok-3-mini', popularity: 1.5, kind: 'chat' },
];

const TEAM_SLUGS = [
  'platform',
  'search',
  'support-bot',
  'growth',
  'data-science',
  'mobile',
  'web',
  'payments',
  'security',
  'docs',
  'sales-assist',
  'marketing',
  'ml-research',
  'infra',
  'analytics',
  'onboarding',
  'recommendations',
  'trust-safety',
  'finance',
  'internal-tools',
];

/** Feature tags (`feature:*`); each team uses a few. */
export const SEED_FEATURES = [
  'chat',
  'search',
  'summarize',
  'onboarding',
  'autocomplete',
  'translate',
  'classify',
  'extract',
  'code-review',
  'agent',
  'rag',
  'email-draft',
  'moderation',
  'report',
  'embeddings',
];

const FIRST_NAMES = [
  'ada',
  'alan',
  'amara',
  'bo',
  'carla',
  'chen',
  'dana',
  'diego',
  'elif',
  'emma',
  'farah',
  'felix',
  'grace',
  'hana',
  'igor',
  'ines',
  'jamal',
  'jin',
  'kai',
  'lena',
  'liam',
  'maya',
  'mei',
  'nadia',
  'noah',
  'omar',
  'priya',
  'quinn',
  'rosa',
  'sam',
  'sofia',
  'tariq',
  'uma',
  'vera',
  'wei',
  'yara',
  'yusuf',
  'zoe',
];
const LAST_NAMES = [
  'adams',
  'baker',
  'costa',
  'diaz',
  'evans',
  'fischer',
  'garcia',
  'haddad',
  'ito',
  'jansen',
  'kim',
  'lopez',
  'meyer',
  'nguyen',
  'okafor',
  'park',
  'rossi',
  'silva',
  'tanaka',
  'novak',
  'walsh',
  'young',
  'zhang',
];

const DAY_MS = 86_400_000;
/** Share of a day's calls in each UTC hour: a working-day curve with a long tail at night. */
const HOUR_WEIGHTS = [
  2, 1.5, 1.2, 1, 1, 1.2, 2, 3.5, 6, 8, 9, 9.5, 9, 9.5, 10, 10, 9.5, 8.5, 7, 5.5, 4.5, 3.8, 3, 2.5,
];

export interface SeedTeam {
  teamId: string;
  alias: string;
  weight: number;
  models: string[];
  features: string[];
}

export interface SeedKey {
  /** The key itself (deterministic, so tests can call with it): only its hash is stored. */
  key: string;
  tokenHash: string;
  userId: string | null;
  teamId: string;
  /** Relative share of the calls on its active days. */
  weight: number;
  /** First day index (0 = the first day of the range) on which the key makes calls. */
  firstDay: number;
  models: Weighted<string>;
  /** The `env:*` tag of its calls, or how often `env:prod` (user keys mix). */
  prodShare: number;
  /** Share of its calls that name an end user. */
  endUserShare: number;
  endUserPool: string[];
  features: string[];
}

/** A budget cap, set once the scope's spend in its period is known: `spend / usedShare` (over 1: over cap). */
export interface SeedBudget {
  scope: { kind: ScopeKind; id: string };
  budgetDuration: string | null;
  /** `null`: no cap. */
  usedShare: number | null;
}

export interface SeedPlan {
  options: ResolvedSeedOptions;
  fingerprint: string;
  /** Teams, users and keys with their budgets (caps and spend filled in after the calls are loaded). */
  entities: EntityInsert[];
  teams: SeedTeam[];
  keys: SeedKey[];
  budgets: SeedBudget[];
  /** Provider of each model, as priced. */
  providers: Map<string, string | null>;
  prices: PriceBook;
}

function uuidFrom(rng: Prng): string {
  const h = rng.hex(32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Teams, users, keys and budgets: everything but the calls. */
export function buildSeedPlan(input: SeedOptions = {}): SeedPlan {
  const options = resolveSeedOptions(input);
  const rng = new Prng(options.seed * 7919 + 17);
  const prices = new PriceBook();
  const providers = new Map<string, string | null>();
  for (const { model } of SEED_MODELS) {
    const price = prices.resolve(model);
    if (!price) throw new Error(`seed: model ${model} is not in the price table`);
    providers.set(model, price.provider ?? null);
  }
  const start = new Date(startOfUtcDay(options.end).getTime() - (options.days - 1) * DAY_MS);
  const createdAt = new Date(start.getTime() - 7 * DAY_MS);
  const entities: EntityInsert[] = [];
  const budgets: SeedBudget[] = [];
  const resetAt = (duration: string | null) =>
    duration === null ? null : nextBudgetResetAt(duration, options.end);
  const modelPopularity = new Map(SEED_MODELS.map((m) => [m.model, m.popularity]));
  const chatModels = SEED_MODELS.filter((m) => m.kind === 'chat').map((m) => m.model);
  const embeddingModels = SEED_MODELS.filter((m) => m.kind === 'embedding').map((m) => m.model);

  const teams: SeedTeam[] = TEAM_SLUGS.map((alias, i) => {
    // A few big teams, a long tail of small ones.
    const weight = 1 / (i + 1) ** 0.8;
    const models = [
      ...rng.sample(chatModels, 4 + rng.int(5)),
      ...(rng.chance(0.6) ? rng.sample(embeddingModels, 1) : []),
    ];
    const features = rng.sample(SEED_FEATURES, 2 + rng.int(3));
    if (alias === 'onboarding' && !features.includes('onboarding')) features[0] = 'onboarding';
    return { teamId: uuidFrom(rng), alias, weight, models, features };
  });
  for (const team of teams) {
    const capped = rng.chance(0.85);
    const budgetDuration = capped ? '1mo' : null;
    entities.push({
      type: 'team',
      record: {
        teamId: team.teamId,
        teamAlias: team.alias,
        models: [],
        metadata: {},
        blocked: false,
        createdAt,
      },
      budget: { maxBudgetNano: null, budgetDuration, budgetResetAt: resetAt(budgetDuration) },
    });
    budgets.push({
      scope: { kind: 'team', id: team.teamId },
      budgetDuration,
      usedShare: capped ? usedShare(rng) : null,
    });
  }

  const teamPicker = new Weighted(teams.map((t) => [t, t.weight] as [SeedTeam, number]));
  const keys: SeedKey[] = [];
  const usedNames = new Set<string>();
  const customerPool = Array.from(
    { length: 3000 },
    (_, i) => `cus_${(i * 7907 + 1013).toString(36).padStart(5, '0')}`,
  );
  const keyFor = (n: number) => `sk-seed${options.seed}-${n.toString(36)}-${rng.hex(24)}`;
  const modelsFor = (team: SeedTeam, count: number) =>
    new Weighted(
      rng.sample(team.models, count).map((m) => [m, modelPopularity.get(m) ?? 1] as [string, number]),
    );

  for (let i = 0; i < 200; i++) {
    let name = `${rng.pick(FIRST_NAMES)}.${rng.pick(LAST_NAMES)}`;
    while (usedNames.has(name)) name = `${name}${rng.int(10)}`;
    usedNames.add(name);
    const team = teamPicker.pick(rng);
    const memberOf = [team.teamId];
    if (rng.chance(0.1)) {
      const other = teamPicker.pick(rng);
      if (other !== team) memberOf.push(other.teamId);
    }
    const capped = rng.chance(0.3);
    entities.push({
      type: 'user',
      record: {
        userId: name,
        userEmail: `${name}@example.com`,
        userRole: rng.chance(0.1) ? 'proxy_admin' : 'internal_user',
        teams: memberOf,
        models: [],
        metadata: {},
        createdAt,
      },
      budget: {
        maxBudgetNano: null,
        budgetDuration: capped ? '30d' : null,
        budgetResetAt: resetAt(capped ? '30d' : null),
      },
    });
    budgets.push({
      scope: { kind: 'user', id: name },
      budgetDuration: capped ? '30d' : null,
      usedShare: capped ? usedShare(rng) : null,
    });
    const keyCount = rng.chance(0.6) ? 1 : rng.chance(0.75) ? 2 : 3;
    for (let k = 0; k < keyCount; k++) {
      const keyTeam = teams.find((t) => t.teamId === memberOf[k % memberOf.length])!;
      keys.push({
        key: keyFor(keys.length),
        tokenHash: '',
        userId: name,
        teamId: keyTeam.teamId,
        weight: team.weight * rng.logNormal(1, 1.1),
        firstDay: rng.chance(0.65) ? 0 : rng.int(options.days),
        models: modelsFor(keyTeam, 2 + rng.int(3)),
        prodShare: 0.3,
        endUserShare: 0,
        endUserPool: [],
        features: rng.sample(keyTeam.features, 1 + rng.int(keyTeam.features.length)),
      });
    }
  }
  // Each team's services: a production key that serves the team's customers, and a staging key.
  for (const team of teams) {
    const customers = rng.sample(customerPool, 150 + rng.int(250));
    for (const env of ['prod', 'staging'] as const) {
      keys.push({
        key: keyFor(keys.length),
        tokenHash: '',
        userId: null,
        teamId: team.teamId,
        weight: team.weight * (env === 'prod' ? 8 : 1.5) * rng.logNormal(1, 0.5),
        firstDay: env === 'prod' && rng.chance(0.25) ? rng.int(Math.ceil(options.days / 2)) : 0,
        models: modelsFor(team, Math.min(team.models.length, 3)),
        prodShare: env === 'prod' ? 1 : 0,
        endUserShare: env === 'prod' ? 0.5 : 0,
        endUserPool: customers,
        features: team.features,
      });
    }
  }
  for (const [i, key] of keys.entries()) {
    key.tokenHash = hashVirtualKey(key.key);
    const service = key.userId === null;
    const capped = service ? rng.chance(0.5) : rng.chance(0.45);
    const budgetDuration = capped ? (service ? '1mo' : rng.pick(['30d', '7d', null])) : null;
    const team = teams.find((t) => t.teamId === key.teamId)!;
    entities.push({
      type: 'key',
      record: {
        tokenHash: key.tokenHash,
        keyName: `sk-...${key.key.slice(-4)}`,
        keyAlias: service
          ? `${team.alias}-${key.prodShare === 1 ? 'prod' : 'staging'}`
          : `${key.userId}-${team.alias}-${i}`,
        userId: key.userId,
        teamId: key.teamId,
        models: [],
        tags: service ? [key.prodShare === 1 ? 'env:prod' : 'env:staging'] : [],
        metadata: {},
        blocked: false,
        expiresAt: null,
        createdAt: new Date(start.getTime() + key.firstDay * DAY_MS - 3_600_000),
      },
      budget: { maxBudgetNano: null, budgetDuration, budgetResetAt: resetAt(budgetDuration) },
    });
    budgets.push({
      scope: { kind: 'key', id: key.tokenHash },
      budgetDuration,
      usedShare: capped ? usedShare(rng) : null,
    });
  }
  return {
    options,
    fingerprint: seedFingerprint(options),
    entities,
    teams,
    keys,
    budgets,
    providers,
    prices,
  };
}

/** How much of its cap a scope has used: mostly well below, some near, a few over. */
function usedShare(rng: Prng): number {
  const x = rng.next();
  if (x < 0.08) return 1.02 + rng.next() * 0.15; // over cap
  if (x < 0.25) return 0.85 + rng.next() * 0.14; // near cap
  return 0.1 + rng.next() * 0.7;
}

export function startOfUtcDay(date: Date): Date {
  return new Date(Math.floor(date.getTime() / DAY_MS) * DAY_MS);
}

/**
 * Where the current budget period of a scope started, at `now`: the instant after which its logs
 * count in its counter. `null` duration: the beginning of time.
 */
export function periodStart(budgetDuration: string | null, now: Date): number {
  if (budgetDuration === null) return 0;
  const next = nextBudgetResetAt(budgetDuration, now).getTime();
  const day = new Date(startOfUtcDay(now));
  if (budgetDuration === '1mo' || budgetDuration === '30d' || budgetDuration === 'monthly') {
    return Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), 1);
  }
  if (budgetDuration === '7d' || budgetDuration === 'weekly') return next - 7 * DAY_MS;
  if (budgetDuration === '1d' || budgetDuration === 'daily') return next - DAY_MS;
  throw new Error(`seed: no period rule for budget_duration ${budgetDuration}`);
}

/** Calls in columns, as the bulk loaders take them (instants in ms since the epoch). */
export interface CallBatch {
  length: number;
  requestId: string[];
  callType: string[];
  apiKeyHash: string[];
  spendNano: number[];
  promptTokens: number[];
  completionTokens: number[];
  startTime: number[];
  endTime: number[];
  model: string[];
  provider: (string | null)[];
  userId: (string | null)[];
  teamId: (string | null)[];
  endUser: (string | null)[];
  tags: string[][];
  status: ('success' | 'failure')[];
  estimated: boolean[];
  httpStatus: number[];
}

function emptyBatch(): CallBatch {
  return {
    length: 0,
    requestId: [],
    callType: [],
    apiKeyHash: [],
    spendNano: [],
    promptTokens: [],
    completionTokens: [],
    startTime: [],
    endTime: [],
    model: [],
    provider: [],
    userId: [],
    teamId: [],
    endUser: [],
    tags: [],
    status: [],
    estimated: [],
    httpStatus: [],
  };
}

/** How many calls each day gets: growth over the range (about 2.5x), quieter weekends, one busy launch day. */
function callsPerDay(plan: SeedPlan, firstDay: Date, rng: Prng): number[] {
  const { days, calls } = plan.options;
  const launch = Math.floor(days * 0.7);
  const weights = Array.from({ length: days }, (_, d) => {
    const weekday = new Date(firstDay.getTime() + d * DAY_MS).getUTCDay();
    const weekend = weekday === 0 || weekday === 6 ? 0.45 : 1;
    const growth = Math.exp((Math.log(2.5) * d) / Math.max(1, days - 1));
    return growth * weekend * (d === launch ? 1.8 : 1) * (0.9 + rng.next() * 0.2);
  });
  const total = weights.reduce((a, b) => a + b, 0);
  const counts = weights.map((w) => Math.floor((calls * w) / total));
  let left = calls - counts.reduce((a, b) => a + b, 0);
  for (let d = days - 1; left > 0; d = (d - 1 + days) % days, left--) counts[d]!++;
  return counts;
}

/**
 * Every call of the plan, in time order, in batches of `batchSize`. Calls never start after
 * `options.end`; each is priced from the price table as the guard would price its usage.
 */
export function* generateCalls(plan: SeedPlan, batchSize = 10_000): Generator<CallBatch> {
  const { options } = plan;
  const rng = new Prng(options.seed * 104729 + 3);
  const endMs = options.end.getTime();
  const firstDay = new Date(startOfUtcDay(options.end).getTime() - (options.days - 1) * DAY_MS);
  const counts = callsPerDay(plan, firstDay, rng);
  const hours = new Weighted(HOUR_WEIGHTS.map((w, h) => [h, w] as [number, number]));
  const incidentDay = Math.floor(options.days * 0.4);
  const cost = (model: string, promptTokens: number, completionTokens: number) =>
    plan.prices.cost(model, { promptTokens, completionTokens }).totalNano;
  let batch = emptyBatch();
  let n = 0;
  for (let d = 0; d < options.days; d++) {
    const dayStart = firstDay.getTime() + d * DAY_MS;
    // The last day ends at `end`; hours after it get no calls.
    const dayEnd = Math.min(dayStart + DAY_MS, endMs);
    const active = plan.keys.filter((k) => k.firstDay <= d);
    const keyPicker = new Weighted(active.map((k) => [k, k.weight] as [SeedKey, number]));
    const times: number[] = [];
    for (let i = 0; i < counts[d]!; i++) {
      let t = dayStart + hours.pick(rng) * 3_600_000 + rng.int(3_600_000);
      if (t >= dayEnd) t = dayStart + rng.int(Math.max(1, dayEnd - dayStart));
      times.push(t);
    }
    times.sort((a, b) => a - b);
    const failureRate = d === incidentDay ? 0.15 : 0.025;
    for (const t of times) {
      const key = keyPicker.pick(rng);
      const model = key.models.pick(rng);
      const embedding = model.startsWith('text-embedding');
      const failed = rng.chance(failureRate);
      const prompt = failed ? 0 : Math.max(8, Math.round(rng.logNormal(embedding ? 400 : 900, 1)));
      const completion = failed || embedding ? 0 : Math.max(1, Math.round(rng.logNormal(220, 0.9)));
      const spend = failed ? 0 : cost(model, prompt, completion);
      const latency = failed ? 50 + rng.int(2000) : Math.round(150 + completion * rng.logNormal(18, 0.4));
      const tags: string[] = [];
      if (!rng.chance(0.04)) {
        tags.push(`feature:${rng.pick(key.features)}`);
        tags.push(rng.chance(key.prodShare) ? 'env:prod' : 'env:staging');
      }
      // UUID-shaped, unique by construction (the call's number comes first).
      const a = hex8(rng.u32());
      const b = hex8(rng.u32());
      batch.requestId.push(
        `${hex8(n)}-${a.slice(0, 4)}-4${a.slice(5, 8)}-a${b.slice(0, 3)}-${b.slice(3)}${hex8(rng.u32()).slice(1)}`,
      );
      batch.callType.push(embedding ? 'aembedding' : rng.chance(0.35) ? 'acompletion_stream' : 'acompletion');
      batch.apiKeyHash.push(key.tokenHash);
      batch.spendNano.push(spend);
      batch.promptTokens.push(prompt);
      batch.completionTokens.push(completion);
      batch.startTime.push(t);
      batch.endTime.push(t + latency);
      batch.model.push(model);
      batch.provider.push(plan.providers.get(model) ?? null);
      batch.userId.push(key.userId);
      batch.teamId.push(key.teamId);
      batch.endUser.push(
        key.endUserShare > 0 && rng.chance(key.endUserShare) ? rng.pick(key.endUserPool) : null,
      );
      batch.tags.push(tags);
      batch.status.push(failed ? 'failure' : 'success');
      batch.estimated.push(!failed && !embedding && rng.chance(0.04));
      batch.httpStatus.push(failed ? rng.pick([429, 429, 500, 500, 503, 400]) : 200);
      batch.length++;
      n++;
      if (batch.length >= batchSize) {
        yield batch;
        batch = emptyBatch();
      }
    }
  }
  if (batch.length > 0) yield batch;
}

/** The cap to give a scope whose spend in its period is `spendNano`: a round number, `usedShare` of it spent. */
export function capFor(spendNano: number, usedShare: number): number {
  if (spendNano === 0) return usdToNano(50);
  const cap = spendNano / usedShare;
  // Round to whole dollars (cents for small budgets), up when under cap, down when over.
  const unit = cap >= usdToNano(100) ? usdToNano(1) : usdToNano(0.01);
  const rounded = usedShare > 1 ? Math.floor(cap / unit) * unit : Math.ceil(cap / unit) * unit;
  return Math.max(unit, rounded);
}
