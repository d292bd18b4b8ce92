import { createHash, createHmac } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { LRUCache } from 'lru-cache';
import type { AlertsHost } from '../guard-api.js';
import type { GuardLogger } from '../guard-logger.js';
import { nanoToUsd } from '../money.js';
import type { BudgetState, ScopeKind, SettleInput, SettleResult } from '../storage/storage-contract.js';
import { scopeKey } from '../storage/storage-contract.js';
import type { BudgetAlertOptions } from './alert-options.js';

export type { BudgetAlertOptions } from './alert-options.js';

/**
 * The JSON body of an alert. Field names follow LiteLLM's budget-alert webhook (`WebhookEvent`:
 * `event`, `event_group`, `event_message`, `spend`, `max_budget`, `soft_budget`, `token`, ...), plus
 * what identifies the alert (`event_id`, `threshold`, `period_*`).
 */
export interface BudgetAlertPayload {
  /** The same for every delivery of this alert: receivers can drop repeats by it. */
  event_id: string;
  /** `threshold_crossed` below 100 %, `budget_crossed` at 100 % or more, `soft_budget_crossed`. */
  event: 'threshold_crossed' | 'budget_crossed' | 'soft_budget_crossed';
  event_group: ScopeKind;
  event_message: string;
  scope: { kind: ScopeKind; id: string; alias: string | null };
  /** The percentage of `max_budget` reached; `null` for the soft budget. */
  threshold: number | null;
  /** The spend (USD) at which the threshold lies. */
  threshold_spend: number;
  /** Spend in the current period (USD) after the call that crossed it. */
  spend: number;
  max_budget: number | null;
  soft_budget: number | null;
  budget_duration: string | null;
  /** When the current period ends and spend resets (`null`: never); the alert can fire again after. */
  budget_reset_at: string | null;
  /** Of the key whose call crossed it (the hash), and its user and team. */
  token: string;
  key_alias: string | null;
  user_id: string | null;
  user_email: string | null;
  team_id: string | null;
  team_alias: string | null;
  customer_id: string | null;
  /** ISO time of the settlement that crossed it (also in `x-spendguard-timestamp`, as Unix seconds). */
  timestamp: string;
}

interface DueAlert {
  /** `80%` or `soft_budget`: the claim's threshold key. */
  key: string;
  percent: number | null;
  atNano: number;
}

const DEFAULT_THRESHOLDS = [50, 80, 95, 100];

/**
 * Fires a signed webhook once per threshold per budget period per scope, off the request's path.
 *
 * After every settlement (`settled`, called by the storage gate once the spend is written) each
 * charged scope is checked against its thresholds: every threshold its spend has reached in the
 * current period is due. A due alert is claimed in storage (`claimAlert`: an atomic insert, so among
 * all processes sharing the store exactly one wins) and only the winner delivers it. Claims are also
 * remembered here, so a scope past 80 % does not cost a storage write per call. Crossing several
 * thresholds in one call sends each of them, lowest first. An alert that cannot be delivered after
 * its retries is logged and not sent again (at most once).
 */
export class BudgetAlerts {
  private readonly thresholds: number[];
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly timeoutMs: number;
  private readonly logger: GuardLogger;
  /** Alerts this process claimed or saw claimed: `scope|period|threshold`. */
  private readonly seen = new LRUCache<string, true>({ max: 50_000 });
  private readonly inFlight = new Set<Promise<void>>();
  private readonly stopping = new AbortController();
  /** Deliveries that failed every attempt. */
  failedDeliveries = 0;

  constructor(
    private readonly guard: AlertsHost,
    private readonly options: BudgetAlertOptions,
  ) {
    this.thresholds = [...new Set(options.thresholds ?? DEFAULT_THRESHOLDS)].sort((a, b) => a - b);
    this.retries = options.retries ?? 5;
    this.retryDelayMs = options.retryDelayMs ?? 1000;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.logger = guard.logger;
  }

  /** After a settlement was written: schedules the alerts it made due. Cheap, synchronous, never throws. */
  settled(input: SettleInput, result: SettleResult): void {
    for (const state of result.states) {
      const due = this.dueAlerts(state).filter((a) => !this.seen.has(this.claimKey(state, a)));
      if (due.length === 0) continue;
      for (const a of due) this.seen.set(this.claimKey(state, a), true);
      const task = this.send(state, due, input).catch((error: unknown) =>
        this.logger.error(`budget alert for ${scopeKey(state.scope)} failed`, error),
      );
      this.inFlight.add(task);
      void task.finally(() => this.inFlight.delete(task));
    }
  }

  /** Waits until every alert scheduled so far is delivered or given up. */
  async flush(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** On shutdown: waits up to `deadlineMs` for deliveries in flight, then stops retrying them. */
  async close(deadlineMs: number): Promise<void> {
    const timer = setTimeout(() => this.stopping.abort(), deadlineMs);
    try {
      await this.flush();
    } finally {
      clearTimeout(timer);
      this.stopping.abort();
    }
  }

  /** The thresholds a scope's spend has reached in its current period, lowest first. */
  private dueAlerts(state: BudgetState): DueAlert[] {
    const due: DueAlert[] = [];
    const max = state.maxBudgetNano;
    if (max !== null && max > 0) {
      const ratio = (state.spendNano / max) * 100;
      for (const percent of this.thresholds) {
        if (ratio < percent * (1 - 1e-9)) break; // clearly below (thresholds ascend)
        // Near the threshold, decide exactly in integers: spend * 10000 >= max * percent * 100.
        const reached =
          ratio > percent * (1 + 1e-9) ||
          BigInt(state.spendNano) * 10_000n >= BigInt(max) * BigInt(Math.round(percent * 100));
        if (reached) due.push({ key: `${percent}%`, percent, atNano: Math.ceil((max * percent) / 100) });
      }
    }
    const soft = state.softBudgetNano;
    if (soft !== null && soft > 0 && state.spendNano >= soft) {
      due.push({ key: 'soft_budget', percent: null, atNano: soft });
    }
    return due.sort((a, b) => a.atNano - b.atNano);
  }

  private claimKey(state: BudgetState, alert: DueAlert): string {
    return `${scopeKey(state.scope)}|${periodOf(state)}|${alert.key}`;
  }

  private async send(state: BudgetState, due: DueAlert[], input: SettleInput): Promise<void> {
    const now = input.now;
    const attribution = await this.attribution(state, input);
    for (const alert of due) {
      let won: boolean;
      try {
        won = await this.guard.gate.call('alert claim', (s) =>
          s.claimAlert({
            scope: state.scope,
            period: periodOf(state),
            threshold: alert.key,
            now,
            expiresAt: state.budgetResetAt,
          }),
        );
      } catch (error) {
        // Unknown whether it was claimed: a later settlement asks again.
        this.seen.delete(this.claimKey(state, alert));
        throw error;
      }
      if (!won) continue; // another process (or an earlier call here) sends it
      const payload = this.payload(state, alert, attribution, now);
      await this.deliver(payload);
    }
  }

  /** Aliases for the payload, from the guard's key cache (a storage read at most). */
  private async attribution(state: BudgetState, input: SettleInput) {
    const log = input.log;
    const ctx = await this.guard.describeKey(log.apiKeyHash).catch(() => null);
    const team = ctx?.team ?? null;
    const user = ctx?.user ?? null;
    const alias =
      state.scope.kind === 'key'
        ? (ctx?.key.keyAlias ?? ctx?.key.keyName ?? null)
        : state.scope.kind === 'team'
          ? (team?.teamAlias ?? null)
          : state.scope.kind === 'user'
            ? (user?.userEmail ?? null)
            : null;
    return {
      alias,
      token: log.apiKeyHash,
      key_alias: ctx?.key.keyAlias ?? null,
      user_id: log.userId,
      user_email: user?.userEmail ?? null,
      team_id: log.teamId,
      team_alias: team?.teamAlias ?? null,
      customer_id: log.endUser,
    };
  }

  private payload(
    state: BudgetState,
    alert: DueAlert,
    who: Awaited<ReturnType<BudgetAlerts['attribution']>>,
    now: Date,
  ): BudgetAlertPayload {
    const kind = state.scope.kind;
    const event =
      alert.percent === null
        ? 'soft_budget_crossed'
        : alert.percent >= 100
          ? 'budget_crossed'
          : 'threshold_crossed';
    const name = `${kind[0]!.toUpperCase()}${kind.slice(1)}=${who.alias ?? state.scope.id}`;
    const spend = nanoToUsd(state.spendNano);
    const max = state.maxBudgetNano === null ? null : nanoToUsd(state.maxBudgetNano);
    const event_message =
      alert.percent === null
        ? `${name} reached its soft budget: spend $${spend} of soft budget $${nanoToUsd(alert.atNano)}`
        : `${name} reached ${alert.percent}% of its budget: spend $${spend} of max budget $${max}`;
    const { alias, ...rest } = who;
    return {
      event_id: createHash('sha256')
        .update(`${scopeKey(state.scope)}|${periodOf(state)}|${alert.key}`)
        .digest('hex')
        .slice(0, 32),
      event,
      event_group: kind,
      event_message,
      scope: { kind, id: state.scope.id, alias },
      threshold: alert.percent,
      threshold_spend: nanoToUsd(alert.atNano),
      spend,
      max_budget: max,
      soft_budget: state.softBudgetNano === null ? null : nanoToUsd(state.softBudgetNano),
      budget_duration: state.budgetDuration,
      budget_reset_at: state.budgetResetAt?.toISOString() ?? null,
      ...rest,
      timestamp: now.toISOString(),
    };
  }

  /** POSTs one alert, retrying with exponential backoff; logs (never throws) when every attempt failed. */
  private async deliver(payload: BudgetAlertPayload): Promise<void> {
    const body = JSON.stringify(payload);
    const signature = signWebhookBody(body, this.options.secret);
    const timestamp = String(Math.floor(Date.parse(payload.timestamp) / 1000));
    let problem = '';
    for (let attempt = 0; attempt <= this.retries; attempt++) {
      if (attempt > 0) {
        const wait = this.retryDelayMs * 2 ** (attempt - 1);
        const stopped = await sleep(wait, false, { signal: this.stopping.signal, ref: false }).catch(
          () => true,
        );
        if (stopped) break;
      }
      try {
        const res = await fetch(this.options.webhookUrl, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'spendguard-alerts',
            'x-spendguard-event': payload.event,
            'x-spendguard-event-id': payload.event_id,
            'x-spendguard-timestamp': timestamp,
            'x-spendguard-signature': signature,
            'x-spendguard-delivery-attempt': String(attempt + 1),
          },
          body,
          signal: AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.stopping.signal]),
        });
        await res.body?.cancel().catch(() => {});
        if (res.ok) return;
        problem = `HTTP ${res.status}`;
      } catch (error) {
        problem = (error as Error).message;
      }
    }
    this.failedDeliveries++;
    this.logger.error(
      `could not deliver budget alert ${payload.event} for ${payload.scope.kind} ${payload.scope.id} to the webhook (${problem}); it is not sent again`,
    );
  }
}

/** The budget period a state is in, as its reset time (`''`: a budget that never resets). */
function periodOf(state: BudgetState): string {
  return state.budgetResetAt?.toISOString() ?? '';
}

/**
 * The signature header of a webhook body: `sha256=` + hex HMAC-SHA256 of the raw body with the secret.
 * Receivers compute it over the bytes they received and compare in constant time.
 * @example
 * const ok = timingSafeEqual(Buffer.from(req.headers['x-spendguard-signature']), Buffer.from(signWebhookBody(raw, secret)));
 */
export function signWebhookBody(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}
