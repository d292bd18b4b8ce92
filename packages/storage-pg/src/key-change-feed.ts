import { type SQL, sql } from 'drizzle-orm';
import type pg from 'pg';
import { int8AsNumber } from './int8-types.js';

/** The Postgres channel that carries key changes, shared by every schema of a database. */
export const KEY_CHANGE_CHANNEL = 'spendguard_key_changes';

/** The NOTIFY payload: the schema (several stores may share a database), the key's hash, its row. */
interface Payload {
  schema: string;
  tokenHash: string | null;
  seq: number;
}

/**
 * One statement that records key changes (a token hash, or `null` for "any key") in `key_changes`,
 * NOTIFYs each (Postgres delivers a NOTIFY when its transaction commits, so never for a change that
 * rolled back) and prunes rows older than an hour.
 */
export function recordKeyChanges(q: string, schema: string, tokenHashes: (string | null)[]): SQL {
  return sql`WITH changes AS (
      INSERT INTO ${sql.raw(q)}.key_changes (token_hash)
      SELECT h FROM jsonb_array_elements_text(${JSON.stringify(tokenHashes)}::jsonb) AS h
      RETURNING seq, token_hash
    ), pruned AS (
      DELETE FROM ${sql.raw(q)}.key_changes WHERE changed_at < now() - interval '1 hour'
    )
    SELECT seq, pg_notify(${KEY_CHANGE_CHANNEL},
      json_build_object('schema', ${schema}::text, 'tokenHash', token_hash, 'seq', seq)::text)
    FROM changes`;
}

const MIN_RETRY_MS = 100;
const MAX_RETRY_MS = 5000;

/**
 * One dedicated connection that LISTENs on `spendguard_key_changes` while anyone subscribes, and
 * reconnects (with backoff) whenever it fails. Each time the LISTEN is (re)made, listeners hear
 * `null` (changes whose NOTIFY came while nobody listened are unknown: drop every cached key), then
 * every change recorded in `key_changes` after the last one seen, so a change made right after
 * subscribing, before the connection is up, is still reported. A change may be reported twice.
 */
export class KeyChangeFeed {
  readonly #listeners = new Set<(tokenHash: string | null) => void>();
  readonly #newClient: () => pg.Client;
  readonly #schema: string;
  readonly #replaySql: string;
  #lastSeq: number;
  #client: pg.Client | null = null;
  #retryMs = MIN_RETRY_MS;
  #timer: NodeJS.Timeout | null = null;

  /** `lastSeq`: the newest `key_changes` row known when the store opened; replay starts after it. */
  constructor(options: { newClient: () => pg.Client; schema: string; q: string; lastSeq: number }) {
    this.#newClient = options.newClient;
    this.#schema = options.schema;
    this.#replaySql = `SELECT seq, token_hash FROM ${options.q}.key_changes WHERE seq > $1 ORDER BY seq`;
    this.#lastSeq = options.lastSeq;
  }

  subscribe(listener: (tokenHash: string | null) => void): () => void {
    // A wrapper, so that the same function subscribed twice is two subscriptions.
    const entry = (tokenHash: string | null) => listener(tokenHash);
    this.#listeners.add(entry);
    if (this.#listeners.size === 1) this.#start();
    return () => {
      if (this.#listeners.delete(entry) && this.#listeners.size === 0) this.stop();
    };
  }

  /** Drops the connection and every listener. */
  stop(): void {
    this.#listeners.clear();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const client = this.#client;
    this.#client = null;
    // end() also fails if the connection is already broken; there is nothing left to clean up then.
    client?.end().catch(() => {});
  }

  #start(): void {
    const client = this.#newClient();
    this.#client = client;
    let failed = false;
    const fail = () => {
      if (failed || this.#client !== client) return;
      failed = true;
      this.#client = null;
      client.end().catch(() => {});
      this.#timer = setTimeout(() => {
        this.#timer = null;
        if (this.#listeners.size > 0) this.#start();
      }, this.#retryMs);
      this.#timer.unref();
      this.#retryMs = Math.min(this.#retryMs * 2, MAX_RETRY_MS);
    };
    client.on('error', fail);
    client.on('end', fail);
    client.on('notification', (msg) => {
      if (msg.channel !== KEY_CHANGE_CHANNEL || msg.payload === undefined) return;
      let payload: Payload;
      try {
        payload = JSON.parse(msg.payload) as Payload;
      } catch {
        return; // not ours: someone else NOTIFYing on the channel
      }
      if (payload.schema !== this.#schema) return;
      this.#lastSeq = Math.max(this.#lastSeq, payload.seq);
      this.#emit(payload.tokenHash ?? null);
    });
    const connected = async () => {
      await client.connect();
      await client.query(`LISTEN ${KEY_CHANGE_CHANNEL}`);
      const missed = await client.query<{ seq: number; token_hash: string | null }>({
        text: this.#replaySql,
        values: [this.#lastSeq],
        types: int8AsNumber,
      });
      if (this.#client !== client) return;
      this.#retryMs = MIN_RETRY_MS;
      this.#emit(null);
      for (const row of missed.rows) {
        this.#lastSeq = Math.max(this.#lastSeq, row.seq);
        this.#emit(row.token_hash);
      }
    };
    connected().catch(fail);
  }

  #emit(tokenHash: string | null): void {
    for (const listener of this.#listeners) {
      try {
        listener(tokenHash);
      } catch (err) {
        // A listener's bug is the app's to see (as an uncaught exception), not the connection's.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
