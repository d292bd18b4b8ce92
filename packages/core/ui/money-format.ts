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
  const a = Math.abs(n);
  if (a === 0) return '$0.00';
  if (a >= 1) {
    return `${sign}$${a.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  }
  // Rounds half up at the fourth decimal; what rounds to $1.0000 is shown as $1.00.
  const rounded = Math.round(a * 1e4) / 1e4;
  if (rounded >= 1) return `${sign}$1.00`;
  if (rounded === 0) return `${sign === '-' ? '>-' : '<'}$0.0001`;
  return `${sign}$${rounded.toFixed(4)}`;
}

/** The exact amount, to the nano-dollar the library counts in, for a tooltip or a detail view. */
export function usdExact(n: number): string {
  const sign = n < 0 ? '-' : '';
  const trimmed = Math.abs(n).toFixed(9).replace(/0+$/, '');
  // At least cents: `1.` becomes `1.00`, `1.5` becomes `1.50`.
  const fixed = trimmed.padEnd(trimmed.indexOf('.') + 3, '0');
  return `${sign}$${fixed}`;
}
