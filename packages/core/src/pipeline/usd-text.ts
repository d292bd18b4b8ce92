/**
 * `String(nano / 1e9)`, the dollar text of a whole number of nano-dollars, without the float
 * division and the shortest-round-trip conversion for the usual range (1,000 to 10^15 nano-dollars):
 * below 10^15 the quotient has at most 15 significant digits, so the double nearest it prints as
 * exactly those digits, which is what this writes. Anything else (fractions, negatives, amounts
 * below $0.000001 that print with an exponent, $1M and more) goes to `String(nano / 1e9)` itself.
 */
export function usdText(nano: number): string {
  if (!Number.isInteger(nano) || nano < 1000 || nano >= 1e15) return String(nano / 1e9);
  const whole = Math.floor(nano / 1e9);
  const frac = nano - whole * 1e9;
  if (frac === 0) return String(whole);
  const digits = String(1e9 + frac); // '1' then the nine decimals
  let end = 10;
  while (digits.charCodeAt(end - 1) === 48) end--; // trailing '0's
  return `${whole}.${digits.slice(1, end)}`;
}
