// Money is an integer number of nano-dollars (1e-9 USD) inside the library; APIs speak USD numbers.

/**
 * Converts USD to integer nano-dollars (1e-9 USD), rounding to the nearest nano-dollar.
 * @example usdToNano(0.0075) // 7_500_000
 */
export function usdToNano(usd: number): number {
  return Math.round(usd * 1e9);
}

/**
 * Converts integer nano-dollars (1e-9 USD) to USD.
 * @example nanoToUsd(7_500_000) // 0.0075
 */
export function nanoToUsd(nano: number): number {
  return nano / 1e9;
}
