// Stage 5, price: the metered usage times the model's prices, in integer nano-dollars.
import type { MeteredUsage } from '../metering/track.js';
import type { PriceBook } from '../pricing/price-book.js';
import type { CallRecord } from './call-types.js';

/** A call's record before it is settled: what it cost, not yet how it ended. */
export type PricedRecord = Omit<CallRecord, 'status' | 'httpStatus'>;

/** Prices a call's metered usage (an unmetered model: $0). */
export function priceCall(
  prices: Pick<PriceBook, 'cost'>,
  metered: MeteredUsage,
  requestId: string,
  tags: string[],
): PricedRecord {
  const { model, usage, estimated } = metered;
  const cost = model ? prices.cost(model, usage) : { totalNano: 0 };
  return {
    requestId,
    model,
    costNano: cost.totalNano,
    costUsd: cost.totalNano / 1e9,
    usage,
    estimated,
    tags,
  };
}
