import * as crypto from 'node:crypto';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** `crypto.hash` (Node 20.12+): a one-shot digest, without a Hash object per call. */
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: 'hex') => string }).hash;

/** A new virtual key: `sk-` + 192 random bits, base64url. Shown once; only its hash is stored. */
export function generateVirtualKey(): string {
  return `sk-${randomBytes(24).toString('base64url')}`;
}

/** SHA-256 hex of a key: the only form in which keys are stored or logged. */
export function hashVirtualKey(key: string): string {
  return oneShotHash ? oneShotHash('sha256', key, 'hex') : createHash('sha256').update(key).digest('hex');
}

/** LiteLLM's display form of a key: `sk-...abcd`. */
export function maskVirtualKey(key: string): string {
  return `sk-...${key.slice(-4)}`;
}

const HASH_RE = /^[0-9a-f]{64}$/;

/** A caller may name a key by the key itself or by its stored hash (as LiteLLM's `token`). */
export function keyHashFromKeyOrHash(value: string): string {
  return HASH_RE.test(value) ? value : hashVirtualKey(value);
}

/** Constant-time string comparison (hashes both sides so lengths never leak). */
export function constantTimeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
