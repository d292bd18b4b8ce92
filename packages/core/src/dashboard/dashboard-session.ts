import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { constantTimeEqual } from '../keys.js';
import type { DashboardSessionRecord, SpendStorage } from '../storage/storage-contract.js';

/** The session cookie's name. */
export const SESSION_COOKIE = 'spendguard_session';

/** A session id: 32 random bytes, base64url. */
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

export interface Session {
  username: string;
  /** SHA-256 (hex) of the cookie's id: the session's key in storage, what logout deletes. */
  idHash: string;
  expiresAt: number;
  /** The token every change must carry (`x-csrf-token` header or `csrf_token` form field). */
  csrfToken: string;
}

/**
 * Dashboard sessions kept in the guard's storage: the cookie carries only a random id (256 bits), and
 * the store keeps its hash, its user and expiry. Every instance sharing the store accepts it until it
 * expires or logs out, restarts included, and nothing in the cookie says anything about the password.
 * A session is bound to the credentials it was opened with (an HMAC keyed by its id): changing the
 * username or password ends every session. Credentials are compared as HMACs under a random key of
 * this process, in constant time whatever their lengths.
 */
export class DashboardSessions {
  readonly #compareKey = randomBytes(32);
  readonly #username: Buffer;
  readonly #password: Buffer;

  constructor(
    private readonly username: string,
    private readonly password: string,
    private readonly ttlMs: number,
  ) {
    this.#username = this.#mac(username);
    this.#password = this.#mac(password);
  }

  /** Both compared, always both, so a wrong username takes as long as a wrong password. */
  checkCredentials(username: string, password: string): boolean {
    const userOk = timingSafeEqual(this.#mac(username), this.#username);
    const passwordOk = timingSafeEqual(this.#mac(password), this.#password);
    return userOk && passwordOk;
  }

  /** Opens a session in `storage`; the cookie's value is its id. */
  async create(storage: SpendStorage, now: Date): Promise<{ cookieValue: string; session: Session }> {
    const id = randomBytes(32).toString('base64url');
    const record: DashboardSessionRecord = {
      idHash: sha256(id),
      username: this.username,
      credentialMac: this.#credentialMac(id),
      createdAt: now,
      expiresAt: new Date(now.getTime() + this.ttlMs),
    };
    await storage.createDashboardSession(record, now);
    return { cookieValue: id, session: sessionOf(record, this.#csrf(id)) };
  }

  /**
   * The session a cookie value stands for; `null` when absent, unknown, expired, logged out, or opened
   * with other credentials. Storage errors are thrown (the caller answers 503), never read as "no session".
   */
  async verify(storage: SpendStorage, cookieValue: string | null, now: Date): Promise<Session | null> {
    if (!cookieValue || !SESSION_ID.test(cookieValue)) return null;
    const record = await storage.getDashboardSession(sha256(cookieValue), now);
    if (!record || !constantTimeEqual(record.credentialMac, this.#credentialMac(cookieValue))) return null;
    return sessionOf(record, this.#csrf(cookieValue));
  }

  checkCsrf(session: Session, presented: string | null | undefined): boolean {
    return !!presented && constantTimeEqual(presented, session.csrfToken);
  }

  /** Logs out: deletes the session from storage, so no instance accepts its cookie again. */
  async revoke(storage: SpendStorage, session: Session): Promise<void> {
    await storage.deleteDashboardSession(session.idHash);
  }

  #mac(value: string): Buffer {
    return createHmac('sha256', this.#compareKey).update(value).digest();
  }

  #credentialMac(id: string): string {
    const u = Buffer.from(this.username);
    return createHmac('sha256', id)
      .update(`spendguard-dashboard-credentials\0${u.length}\0`)
      .update(u)
      .update(this.password)
      .digest('hex');
  }

  #csrf(id: string): string {
    return createHmac('sha256', id).update('spendguard-dashboard-csrf').digest('base64url');
  }
}

function sha256(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

function sessionOf(record: DashboardSessionRecord, csrfToken: string): Session {
  return {
    username: record.username,
    idHash: record.idHash,
    expiresAt: record.expiresAt.getTime(),
    csrfToken,
  };
}

/** One cookie's value from a `Cookie` header. */
export function readCookie(header: string | null | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

/**
 * The `Set-Cookie` for a session: httpOnly, SameSite=Strict, Secure when the request came over TLS.
 * No `Path`: the browser scopes it to the folder of the login URL, i.e. wherever `ui/` is mounted.
 */
export function sessionCookie(value: string, maxAgeSeconds: number, secure: boolean): string {
  return [
    `${SESSION_COOKIE}=${value}`,
    `Max-Age=${maxAgeSeconds}`,
    'HttpOnly',
    'SameSite=Strict',
    ...(secure ? ['Secure'] : []),
  ].join('; ');
}
