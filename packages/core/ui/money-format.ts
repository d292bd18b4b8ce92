/**
 * The dashboard's one rule for money, used by every page, chart axis and legend:
 * - $1 and more: cents, with thousands separators (`$1,234.50`);
 * - under $1: four decimals (`$0.0900`, `$0.0046`), so that a column of small amounts lines up;
 * - under $0.0001 but not zero: `<$0.0001` (the exact amount is on hover, see `usdExact`);
 * - zero: `$0.00`. Negative amounts (a refund, a manual spend reset) keep their sign in front.
 */
export function usd(n: number): string {
  if (!Number.isFinite(n)) return '—';
  const sign = n < 0 ? '-' : '';
  // From whole nano-dollars (what the library counts in), rounding half up: 0.00465 is
  // 0.0046499999… as a double, and would otherwise show as $0.0046.
  const nano = Math.round(Math.abs(n) * 1e9);
  if (nano === 0) return '$0.00';
  const tenThousandths = Math.floor((nano + 50_000) / 100_000);
  if (tenThousandths >= 10_000) {
    const cents = Math.floor((nano + 5_000_000) / 10_000_000);
    return `${sign}$${(cents / 100).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  }
  if (tenThousandths === 0) return `${sign === '-' ? '>-' : '<'}$0.0001`;
  return `${sign}$0.${String(tenThousandths).padStart(4, '0')}`;
}

/** The exact amount, to the nano-dollar the library counts in, for a tooltip or a detail view. */
export function usdExact(n: number): string {
  const sign = n < 0 ? '-' : '';
  const trimmed = Math.abs(n).toFixed(9).replace(/0+$/, '');
  // At least cents: `1.` becomes `1.00`, `1.5` becomes `1.50`.
  const fixed = trimmed.padEnd(trimmed.indexOf('.') + 3, '0');
  return `${sign}$${fixed}`;
}
