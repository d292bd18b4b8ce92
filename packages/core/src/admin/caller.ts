import { SpendGuardError } from '../errors.js';

/**
 * Who calls the management API, as found from the credential presented:
 * - `proxy_admin`: the master key; manages everything;
 * - `team_admin`: a key of a user who has the role `admin` in `teamIds`; manages those teams (their
 *   info, members and keys) and reads its own key;
 * - `key`: any other valid key; reads its own info and spend.
 */
export type Caller =
  | { role: 'proxy_admin' }
  | { role: 'team_admin'; tokenHash: string; userId: string; teamIds: string[] }
  | { role: 'key'; tokenHash: string; userId: string | null };

/**
 * Who may call a route at all (the handler then narrows what a team admin or key may touch):
 * `admin` the master key only, `team` also team admins, `self` any valid key, `public` anyone (the
 * health probes, as LiteLLM leaves them open).
 */
export type RouteAccess = 'admin' | 'team' | 'self' | 'public';

/** 403 (authenticated, not allowed) in LiteLLM's error shape; `param` names the field refused. */
export function forbidden(message: string, param?: string): SpendGuardError {
  return new SpendGuardError('FORBIDDEN', `Authentication Error, ${message}`, { param });
}

/** Refuses a caller that is neither the master key nor an admin of `teamId`. */
export function assertManagesTeam(caller: Caller, teamId: string | null, what: string): void {
  if (caller.role === 'proxy_admin') return;
  if (caller.role === 'team_admin' && teamId !== null && caller.teamIds.includes(teamId)) return;
  throw forbidden(
    teamId === null
      ? `only the master key can ${what} outside a team.`
      : `only the master key or an admin of team '${teamId}' can ${what}.`,
  );
}

/** Whether the route's access level lets this caller in. */
export function admits(access: RouteAccess, caller: Caller): boolean {
  if (caller.role === 'proxy_admin' || access === 'self' || access === 'public') return true;
  return access === 'team' && caller.role === 'team_admin';
}
