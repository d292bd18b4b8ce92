import type { RouteAccess } from './caller.js';

/**
 * What each caller below the master key may do on the routes it is let into (`access` `team` or
 * `self` in the management API's route table): the handler's own narrowing, in words, for the
 * role x route table of docs/access-control.md. A test checks that every such route has its entry
 * and that the page shows the table `accessTable` renders from the route table.
 */
export const NARROWED: Readonly<Record<string, { teamAdmin: string; key?: string }>> = {
  'POST /key/generate': {
    teamAdmin:
      'in its teams, for their members; budgets within the team cap, rate limits within the team’s, models among the team’s',
  },
  'POST /key/service-account/generate': {
    teamAdmin:
      'in its teams; budgets within the team cap, rate limits within the team’s, models among the team’s',
  },
  'GET /key/info': { teamAdmin: 'its own key and its teams’ keys', key: 'itself' },
  'POST /v2/key/info': { teamAdmin: 'its own key and its teams’ keys', key: 'itself' },
  'POST /key/health': { teamAdmin: 'its own key', key: 'itself' },
  'POST /spend/calculate': {
    teamAdmin: 'prices what it is sent; reads nothing stored',
    key: 'prices what it is sent; reads nothing stored',
  },
  'POST /team/bulk_member_add': { teamAdmin: 'as `/team/member_add`, to its teams' },
  'GET /team/info': { teamAdmin: 'its teams' },
  'GET /v1/models': {
    teamAdmin: 'the declared models its own key may call',
    key: 'the declared models it may call',
  },
  'GET /models': {
    teamAdmin: 'the declared models its own key may call',
    key: 'the declared models it may call',
  },
  'GET /model/info': {
    teamAdmin: 'the declared models its own key may call',
    key: 'the declared models it may call',
  },
  'GET /v1/model/info': {
    teamAdmin: 'the declared models its own key may call',
    key: 'the declared models it may call',
  },
  'GET /model_group/info': {
    teamAdmin: 'the declared models its own key may call',
    key: 'the declared models it may call',
  },
  'GET /v2/team/list': { teamAdmin: 'its own user’s teams', key: 'its own user’s teams' },
  'GET /spend/logs': {
    teamAdmin: 'its own key’s, and its teams’ (`team_id`)',
    key: 'its own',
  },
  'GET /spend/logs/v2': {
    teamAdmin: 'its own key’s, and its teams’ (`team_id`)',
    key: 'its own',
  },
  'POST /key/update': {
    teamAdmin:
      'its teams’ keys; budgets (temporary increases included) within the team cap, rate limits within the team’s, models among the team’s; not unblocking a key the master key blocked',
  },
  'POST /key/{key_id}/reset_spend': { teamAdmin: 'its teams’ keys' },
  'POST /key/block': { teamAdmin: 'its teams’ keys' },
  'POST /key/unblock': { teamAdmin: 'its teams’ keys, except those the master key blocked' },
  'POST /key/delete': { teamAdmin: 'its teams’ keys' },
  'POST /key/regenerate': {
    teamAdmin: 'its teams’ keys; budgets, rate limits and models as for `/key/update`',
  },
  'GET /key/list': { teamAdmin: 'its teams’ keys' },
  'POST /team/update': {
    teamAdmin:
      'its teams’ alias and metadata; never their budget, budget windows, rate limits, models or blocked flag',
  },
  'POST /team/member_add': {
    teamAdmin:
      'to its teams: existing users in no team it does not administer (no new users); `max_budget_in_team` within the team cap, rate limits within the team’s',
  },
  'POST /team/member_update': {
    teamAdmin: 'its teams’ members; `max_budget_in_team` within the team cap, rate limits within the team’s',
  },
  'POST /team/member_delete': { teamAdmin: 'its teams’ members' },
};

/** The role x route table of docs/access-control.md, one row per route of the management API. */
export function accessTable(routes: ReadonlyArray<readonly [route: string, access: RouteAccess]>): string {
  const rows = [...routes].sort(([a], [b]) => routeOrder(a).localeCompare(routeOrder(b)));
  const cell = (route: string, access: RouteAccess, role: 'teamAdmin' | 'key') => {
    if (access === 'public') return 'yes: open, no credential needed';
    const allowed = access === 'self' || (access === 'team' && role === 'teamAdmin');
    if (!allowed) return 'no';
    const narrowed = NARROWED[route]?.[role];
    return narrowed ? `yes: ${narrowed}` : 'yes';
  };
  return [
    '| Route | Master key | Team admin key | Other virtual key |',
    '| --- | --- | --- | --- |',
    ...rows.map(
      ([route, access]) =>
        `| \`${route}\` | yes | ${cell(route, access, 'teamAdmin')} | ${cell(route, access, 'key')} |`,
    ),
  ].join('\n');
}

/** Rows by path, then method: each resource's routes together. */
function routeOrder(route: string): string {
  const [method, path] = route.split(' ');
  return `${path} ${method}`;
}
