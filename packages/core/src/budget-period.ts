/**
 * Budget periods in LiteLLM's formats (`30s`, `10m`, `1h`, `1d`, `7d`, `30d`, `1mo`, `2w`, and the
 * aliases `daily`, `weekly`, `monthly`) with LiteLLM's calendar-aligned resets, in UTC:
 * 1d at the next midnight, 7d on the next Monday, 30d and 1mo on the 1st of the next month,
 * other Nd N days after today's midnight; hours, minutes and seconds align to multiples of N
 * counted from midnight (LiteLLM's `get_next_standardized_reset_time`).
 */
const DURATION_RE = /^(\d+)(mo|s|m|h|d|w)$/;
const ALIASES: Record<string, string> = { daily: '1d', weekly: '7d', monthly: '1mo' };

export interface ParsedDuration {
  value: number;
  unit: 'mo' | 's' | 'm' | 'h' | 'd' | 'w';
}

export function parseBudgetDuration(duration: string): ParsedDuration | null {
  const normalized = ALIASES[duration] ?? duration;
  const match = DURATION_RE.exec(normalized);
  if (!match) return null;
  const value = Number(match[1]);
  if (!Number.isSafeInteger(value) || value <= 0) return null;
  return { value, unit: match[2] as ParsedDuration['unit'] };
}

export function isValidBudgetDuration(duration: string): boolean {
  return parseBudgetDuration(duration) !== null;
}

const DAY_MS = 86_400_000;

function utcMidnight(now: Date): number {
  return Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
}

function withinDay(now: Date, stepSeconds: number, unitSeconds: number): Date {
  const midnight = utcMidnight(now);
  const elapsedUnits = Math.floor((now.getTime() - midnight) / 1000 / unitSeconds);
  const next = (Math.floor(elapsedUnits / stepSeconds) + 1) * stepSeconds;
  const nextMs = midnight + next * unitSeconds * 1000;
  // LiteLLM wraps past midnight onto the next day at (next mod 24h); the same instant here.
  return new Date(Math.min(nextMs, midnight + DAY_MS + ((next * unitSeconds * 1000) % DAY_MS)));
}

function dayReset(now: Date, days: number): Date {
  const midnight = utcMidnight(now);
  if (days === 1) return new Date(midnight + DAY_MS);
  if (days === 7) {
    const weekday = (now.getUTCDay() + 6) % 7; // Monday = 0
    return new Date(midnight + (7 - weekday) * DAY_MS);
  }
  if (days === 30) return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
  return new Date(midnight + days * DAY_MS);
}

/** When a budget with this duration next resets, counted from `now`. Throws on an invalid duration. */
export function nextBudgetResetAt(duration: string, now: Date): Date {
  const parsed = parseBudgetDuration(duration);
  if (!parsed) throw new Error(`invalid budget_duration '${duration}'`);
  const { value, unit } = parsed;
  switch (unit) {
    case 's':
      return withinDay(now, value, 1);
    case 'm':
      return withinDay(now, value, 60);
    case 'h':
      return withinDay(now, value, 3600);
    case 'd':
      return dayReset(now, value);
    case 'w':
      return dayReset(now, value * 7);
    case 'mo':
      return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + value, 1));
  }
}
