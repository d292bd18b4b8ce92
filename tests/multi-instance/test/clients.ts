/**
 * What the tests do to the instances over HTTP: management calls, guarded chat calls, and a bounded
 * load spread round-robin over the instances.
 */
import { randomBytes } from 'node:crypto';
import { MASTER } from './instances.js';

/**
 * The call every test makes. The simulator's usage is deterministic (prompt tokens by OpenAI's
 * formula, completion tokens = max_tokens), so every whole call costs the same; near a cap the guard
 * lowers the last calls' max_tokens, and those cost what their cost header says.
 */
export const CHAT = {
  model: 'gpt-4o',
  messages: [{ role: 'user', content: 'hi' }],
  max_tokens: 1000,
};
export const CHAT_BODY = JSON.stringify(CHAT);

export async function adminCall(
  baseUrl: string,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<any> {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${MASTER}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** One guarded call as the client saw it. `status` 0: no HTTP answer (connection refused or cut). */
export interface CallOutcome {
  instance: number;
  status: number;
  /** `x-litellm-call-id`: the spend log's `call_id`. */
  callId: string | null;
  /** The whole body arrived. */
  completed: boolean;
  costHeader: string | null;
  /** From the request to the end of the body (or the failure). */
  ms: number;
  error?: string;
}

/** The end user a call through instance `i` is attributed to. */
export const endUserOf = (instance: number) => `via-instance-${instance}`;

export async function chat(
  baseUrl: string,
  key: string,
  instance = 0,
  timeoutMs = 30_000,
): Promise<CallOutcome> {
  const t0 = performance.now();
  let res: Response;
  try {
    res = await fetch(`${baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${key}`,
        'content-type': 'application/json',
        // Attributes the call to the instance it went to (the spend log's end_user), so that the
        // tests can tell which instance reserved what.
        'x-litellm-end-user-id': endUserOf(instance),
      },
      body: CHAT_BODY,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    const ms = performance.now() - t0;
    return {
      instance,
      status: 0,
      callId: null,
      completed: false,
      costHeader: null,
      ms,
      error: String(error),
    };
  }
  const outcome: CallOutcome = {
    instance,
    status: res.status,
    callId: res.headers.get('x-litellm-call-id'),
    completed: false,
    costHeader: res.headers.get('x-litellm-response-cost'),
    ms: 0,
  };
  try {
    const text = await res.text();
    outcome.completed = true;
    if (res.status !== 200 && res.status !== 429) outcome.error = text;
  } catch (error) {
    outcome.error = String(error);
  }
  outcome.ms = performance.now() - t0;
  return outcome;
}

/** A running load: its outcomes when done, and what is in flight meanwhile. */
export interface LoadRun {
  done: Promise<CallOutcome[]>;
  /** The outcomes so far, in the order the calls ended. */
  outcomes: readonly CallOutcome[];
  /** Start times of the calls still waiting for their response headers, per instance. */
  waiting: Map<number, Set<number>>;
}

/**
 * `total` calls with `key`, at most `concurrency` at a time, round-robin over the instances that
 * `targets()` lists when each call starts (so a dead instance can be left out).
 */
export function runLoad(options: {
  urls: string[];
  key: string;
  total: number;
  concurrency: number;
  targets?: () => number[];
}): LoadRun {
  const { urls, key, total, concurrency } = options;
  const targets = options.targets ?? (() => urls.map((_, i) => i));
  const waiting = new Map<number, Set<number>>(urls.map((_, i) => [i, new Set<number>()]));
  const outcomes: CallOutcome[] = [];
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const n = next++;
      const live = targets();
      const instance = live[n % live.length]!;
      const started = performance.now();
      const mark = started + Math.random() / 1e6; // unique in the set
      waiting.get(instance)!.add(mark);
      const outcome = await chat(urls[instance]!, key, instance).finally(() =>
        waiting.get(instance)!.delete(mark),
      );
      outcomes.push(outcome);
    }
  };
  const done = Promise.all(Array.from({ length: concurrency }, worker)).then(() => outcomes);
  return { done, outcomes, waiting };
}

/** Known costs of {@link CHAT}, in nano-dollars. */
export interface CallCosts {
  /** What one call is charged (the simulator's deterministic usage, priced). */
  actualNano: number;
  /** The guard's cheap worst-case estimate (what it reserves first). */
  worstCaseNano: number;
  /** The precise estimate (prompt counted with the tokenizer), tried near a cap in strict mode. */
  preciseNano: number;
  /** The least a call can reserve: the precise prompt with the output cut to the 256-token minimum. */
  floorNano: number;
}

/**
 * {@link CHAT}'s costs, worked out by hand from the price table (gpt-4o at the standard tier: 2.5e-6 per
 * input token, 1e-5 per output token; the request names no service tier, so the priority prices do not
 * apply) and the worst case's documented rule (docs/worst-case.md), never with the guard's code:
 * - actual: 8 prompt tokens (OpenAI's rule: 3 per message + 'user' + 'hi' + 3 priming the reply) and
 *   1000 completion tokens: 8 x 2.5e-6 + 1000 x 1e-5 = $0.01002;
 * - worst case: the body's 80 bytes + 4 per message + 16: 100 x 2.5e-6 + 1000 x 1e-5 = $0.01025;
 * - precise: 'user' + 'hi' counted (2) + 4 + 16 = 22 tokens: 22 x 2.5e-6 + 1000 x 1e-5 = $0.010055;
 * - floor: 22 x 2.5e-6 + 256 x 1e-5 = $0.002615.
 */
export const CHAT_COSTS: CallCosts = {
  actualNano: 10_020_000,
  worstCaseNano: 10_250_000,
  preciseNano: 10_055_000,
  floorNano: 2_615_000,
};

/**
 * One call through each instance on a key with no budget (and no user or team) warms the instances up
 * (the simulator loads its tokenizer on its first call) and checks that each charges {@link CHAT_COSTS}.
 */
export async function callCosts(urls: string[]): Promise<CallCosts> {
  const { key } = await adminCall(urls[0]!, 'POST', '/key/generate', { key_alias: 'calibration' });
  const outcomes = await Promise.all(urls.map((url, i) => chat(url, key, i)));
  const headers = new Set(outcomes.map((o) => o.costHeader));
  if (outcomes.some((o) => o.status !== 200) || headers.size !== 1 || headers.has(null)) {
    throw new Error(`calibration calls failed or disagree: ${JSON.stringify(outcomes)}`);
  }
  const charged = Math.round(Number(outcomes[0]!.costHeader) * 1e9);
  if (Buffer.byteLength(CHAT_BODY) !== 80 || charged !== CHAT_COSTS.actualNano) {
    throw new Error(
      `CHAT is ${Buffer.byteLength(CHAT_BODY)} bytes, charged ${charged} nano: ${JSON.stringify(CHAT_COSTS)}`,
    );
  }
  return CHAT_COSTS;
}

/** A team, a user in it and a key of that user, each with a budget of `budgetUsd`. */
export async function budgetedKey(
  baseUrl: string,
  budgetUsd: number,
): Promise<{ key: string; token: string; userId: string; teamId: string }> {
  const suffix = randomBytes(4).toString('hex');
  const teamId = `team-${suffix}`;
  const userId = `user-${suffix}`;
  await adminCall(baseUrl, 'POST', '/team/new', { team_id: teamId, max_budget: budgetUsd });
  await adminCall(baseUrl, 'POST', '/user/new', { user_id: userId, team_id: teamId, max_budget: budgetUsd });
  const key = await adminCall(baseUrl, 'POST', '/key/generate', {
    user_id: userId,
    team_id: teamId,
    max_budget: budgetUsd,
  });
  if (key.team_id !== teamId) throw new Error(`the key is not in team ${teamId}: ${JSON.stringify(key)}`);
  return { key: key.key, token: key.token, userId, teamId };
}

/** Spend (USD) of the key, its user and its team as the management API reports them. */
export async function apiSpend(
  baseUrl: string,
  ids: { token: string; userId: string; teamId: string },
): Promise<{ key: number; user: number; team: number }> {
  const [key, user, team] = await Promise.all([
    adminCall(baseUrl, 'GET', `/key/info?key=${ids.token}`),
    adminCall(baseUrl, 'GET', `/user/info?user_id=${ids.userId}`),
    adminCall(baseUrl, 'GET', `/team/info?team_id=${ids.teamId}`),
  ]);
  return { key: key.info.spend, user: user.user_info.spend, team: team.team_info.spend };
}

/** Polls `check` until it returns true (or throws its last failure after `timeoutMs`). */
export async function eventually(
  check: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
