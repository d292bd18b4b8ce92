// Stage 7, record: the finished call handed to the sinks (`onCall`, metrics, tracing), off the
// request's path; a sink's failure never touches the call.
import type { CallObservers } from '../observability/call-events.js';
import type { SpendLogRecord } from '../storage/storage-contract.js';
import type { CallState } from './call-types.js';
import type { PricedRecord } from './price.js';

export interface SettledFacts {
  log: SpendLogRecord;
  record: PricedRecord;
  /** Whether the settlement was written (else kept and retried). */
  written: boolean;
  /** What the call's reservation held when it settled. */
  reservedNano: number;
  /** How long admission took, in ms (`null`: a child call). */
  admissionMs: number | null;
  settleMs: number;
}

/** Tells the observers a call settled. */
export function recordSettled(
  observers: Pick<CallObservers, 'settled'>,
  state: CallState,
  f: SettledFacts,
): void {
  observers.settled({
    log: f.log,
    costUsd: f.record.costUsd,
    usage: f.record.usage,
    requestedModel: state.model,
    keyAlias: state.ctx?.key.keyAlias ?? null,
    teamAlias: state.ctx?.team?.teamAlias ?? null,
    settled: f.written,
    reservedNano: f.reservedNano,
    admissionMs: f.admissionMs,
    settleMs: f.settleMs,
  });
}
