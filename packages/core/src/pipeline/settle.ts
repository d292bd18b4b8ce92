// Stage 6, settle: the spend log of a priced call, and its actual cost added to every scope it
// reserved on with the reservation released, in one guarded write (through the storage gate).
import type { CallMeter } from '../metering/track.js';
import type { PriceBook } from '../pricing/price-book.js';
import type { SpendLogRecord } from '../storage/storage-contract.js';
import { type CallRecord, type CallState, isPlainObject } from './call-types.js';
import type { PricedRecord } from './price.js';

/** The spend-log row of a finished call. */
export function spendLogOf(o: {
  state: CallState;
  meter: CallMeter;
  record: PricedRecord;
  prices: Pick<PriceBook, 'resolve'>;
  httpStatus: number;
  status: CallRecord['status'];
  endTime: Date;
  aborted: boolean;
  responseId: string | null;
}): SpendLogRecord {
  const { state, record } = o;
  const ctx = state.ctx;
  return {
    requestId: state.requestId,
    callType: o.meter.callType(),
    apiKeyHash: state.keyHash,
    spendNano: record.costNano,
    promptTokens: record.usage.promptTokens,
    completionTokens: record.usage.completionTokens,
    totalTokens: record.usage.promptTokens + record.usage.completionTokens,
    startTime: state.startTime,
    endTime: o.endTime,
    model: record.model,
    provider: record.model ? (o.prices.resolve(record.model)?.provider ?? null) : null,
    userId: ctx?.user?.userId ?? ctx?.key.userId ?? null,
    teamId: ctx?.team?.teamId ?? ctx?.key.teamId ?? null,
    endUser: state.endUser,
    tags: record.tags,
    status: o.status,
    estimated: record.estimated,
    httpStatus: o.httpStatus,
    metadata: logMetadata(state, o.meter, o.aborted),
    responseId: o.responseId,
  };
}

/** The spend log's metadata: how the call was metered, and what admission did to it. */
function logMetadata(state: CallState, meter: CallMeter, aborted: boolean): Record<string, unknown> {
  const meta = meter.metadata();
  if (aborted) meta.stream_cut = true;
  if (state.outputLowered !== null) meta.output_tokens_lowered = state.outputLowered;
  if (state.unpriced) meta.unpriced = true;
  // LiteLLM's spend_logs_metadata (the key's, then the call's over it) and session id, kept on the log.
  const body = state.body;
  const fromKey = state.ctx?.key.metadata.spend_logs_metadata;
  const fromCall = isPlainObject(body.metadata) ? body.metadata.spend_logs_metadata : undefined;
  if (isPlainObject(fromKey) || isPlainObject(fromCall)) {
    meta.spend_logs_metadata = {
      ...(isPlainObject(fromKey) ? fromKey : {}),
      ...(isPlainObject(fromCall) ? fromCall : {}),
    };
  }
  const session =
    body.litellm_session_id ?? (isPlainObject(body.metadata) ? body.metadata.litellm_session_id : undefined);
  if (typeof session === 'string' && session !== '') meta.session_id = session;
  return meta;
}
