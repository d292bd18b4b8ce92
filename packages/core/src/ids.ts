import { randomFillSync } from 'node:crypto';

let prefixMs = -1;
let prefix = '';

/** Ids whose random part is formatted at once, in one batch. */
const BATCH = 256;
/** Each id's random part as text: `xxx-yxxx-xxxxxxxxxxxx` (21 characters). */
const TAIL = 21;
/** 10 random bytes per id: 20 hex digits, of which the tail keeps 19 (74 random bits and the variant). */
const bytes = Buffer.allocUnsafe(BATCH * 10);
let tails = '';
let next = BATCH;

/**
 * A UUID version 7 (RFC 9562): the first 48 bits are the Unix time in milliseconds, the other 74 are
 * random. Ids made one after another sort in time order, so an index on them grows at its right edge:
 * a spend log's insert touches the last page of its request-id index instead of a random one (with a
 * random UUID, a large log table pays a page read and a page write per insert for that index alone).
 */
export function timeOrderedId(): string {
  const nowMs = Date.now();
  if (nowMs !== prefixMs) {
    const ms = nowMs.toString(16).padStart(12, '0');
    prefix = `${ms.slice(0, 8)}-${ms.slice(8, 12)}-7`;
    prefixMs = nowMs;
  }
  if (next === BATCH) refill();
  const at = next++ * TAIL;
  // Two pieces (the millisecond's prefix and a slice of the batch): cheaper to make, and to flatten
  // when the id is hashed or stored, than a UUID formatted and cut per call.
  return prefix + tails.slice(at, at + TAIL);
}

/** The random parts of the next `BATCH` ids, from the CSPRNG, formatted in one pass. */
function refill(): void {
  randomFillSync(bytes);
  // The 5th hex digit of each id's 20 carries the variant (10xx): 8, 9, a or b.
  for (let i = 2; i < bytes.length; i += 10) bytes[i] = (bytes[i]! & 0x3f) | 0x80;
  // Of 20 digits: the first is dropped (the version digit takes its place), then 3-4-12.
  tails = bytes.toString('hex').replace(/.(.{3})(.{4})(.{12})/g, '$1-$2-$3');
  next = 0;
}
