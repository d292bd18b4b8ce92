import { createHash, createHmac, randomBytes } from 'node:crypto';
import { constantTimeEqual } from '../keys.js';

/** The session cookie's name. */
export const SESSION_COOKIE = 'spendguard_session';

export interface Session {
  username: string;
  /** Random per login: what logout revokes and the CSRF token is bound to. */
  nonce: string;
  expiresAt: number;
  /** The token every change must carry (`x-csrf-token` header or `csrf_token` form field). */
  csrfToken: string;
}

/**
 * Stateless, signed dashboard sessions: the cookie carries its user, expiry and a random nonce,
 * HMAC-signed with a key derived from the dashboard's credentials. Any instance configured with the
 * same credentials accepts it (no session table to share), and changing the password ends every
 * session. Logout revokes the nonce in this process and clears the browser's cookie.
 */
export class DashboardSessions {
  readonly #key: Buffer;
  readonly #revoked = new Map<string, number>();

  constructor(
    private readonly username: string,
    private readonly password: string,
    private readonly ttlMs: number,
  ) {
    this.#key = createHash('sha256')
      .update(`spendguard-dashboard-session\0${username}\0${password}`)
      .digest();
  }

  /** Both compared in constant time, and always both, so a wrong username takes as long as a wrong password. */
  checkCredentials(username: string, password: string): boolean {
    const userOk = constantTimeEqual(username, this.username);
    const passwordOk = constantTimeEqual(password, this.password);
    return userOk && passwordOk;
  }

  create(nowMs: number): { cookieValue: string; session: Session } {
    const nonce = randomBytes(18).toString('base64url');
    const expiresAt = nowMs + this.ttlMs;
    const payload = `v1.${expiresAt}.${nonce}.${Buffer.from(this.username).toString('base64url')}`;
    return {
      cookieValue: `${payload}.${this.#sign(payload)}`,
      session: { username: this.username, nonce, expiresAt, csrfToken: this.#csrf(nonce) },
    };
  }

  /** The session a cookie value stands for; `null` when absent, forged, expired or logged out. */
  verify(cookieValue: string | null, nowMs: number): Session | null {
    if (!cookieValue) return null;
    const parts = cookieValue.split('.');
    if (parts.length !== 5 || parts[0] !== 'v1') return null;
    const payload = parts.slice(0, 4).join('.');
    if (!constantTimeEqual(parts[4]!, this.#sign(payload))) return null;
    const expiresAt = Number(parts[1]);
    const nonce = parts[2]!;
    if (!(expiresAt > nowMs) || this.#revoked.has(nonce)) return null;
    const username = Buffer.from(parts[3]!, 'base64url').toString('utf8');
    return { username, nonce, expiresAt, csrfToken: this.#csrf(nonce) };
  }

  checkCsrf(session: Session, presented: string | null | undefined): boolean {
    return !!presented && constantTimeEqual(presented, session.csrfToken);
  }

  revoke(session: Session, nowMs: number): void {
    for (const [nonce, until] of this.#revoked) if (until <= nowMs) this.#revoked.delete(nonce);
    this.#revoked.set(session.nonce, session.expiresAt);
  }

  #sign(payload: string): string {
    return createHmac('sha256', this.#key).update(payload).digest('base64url');
  }

  #csrf(nonce: string): string {
    return createHmac('sha256', this.#key).update(`csrf\0${nonce}`).digest('base64url');
  }
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
