/**
 * Twelve series colours, pairwise far apart: nine of Tableau's ten (its grey is left out), navy, lime
 * and wine; every pair, and OTHER_COLOUR, is at least 28 apart in CIELAB (checked by the core tests).
 * A chart draws at most ten groups plus "other", which gets OTHER_COLOUR, a dark grey.
 */
export const PALETTE = [
  '#4e79a7', // blue
  '#f28e2b', // orange
  '#e15759', // red
  '#76b7b2', // teal
  '#59a14f', // green
  '#edc948', // yellow
  '#b07aa1', // purple
  '#ff9da7', // pink
  '#9c755f', // brown
  '#1f2a63', // navy
  '#a6d854', // lime
  '#8b0045', // wine
] as const;

export const OTHER_COLOUR = '#404040';

/** The colour of the i-th series (0-based); past twelve they repeat, which a chart here never needs. */
export function seriesColour(i: number): string {
  return PALETTE[i % PALETTE.length]!;
}
