import { SpendGuardError } from '../errors.js';
import type { RouteAccess } from './caller.js';
import type { Handler, ManagementApi } from './management-types.js';
import { keyGenerateSchema } from './schemas.js';

/**
 * LiteLLM's `POST /key/service-account/generate` (its `key_management_endpoints.py`): a key that
 * belongs to a team and to no user, so that deleting a user never takes it and only the team's limits
 * apply to it. It is `/key/generate` with `team_id` required and no `user_id`, under the same rights
 * (the master key, or an admin of that team) and the same checks (a team admin's key stays within the
 * team's bounds).
 *
 * One difference: LiteLLM ignores a `user_id` sent here; spendguard refuses it (400 naming it), since a
 * field accepted and dropped would leave the caller believing the key is the user's.
 */
export function serviceAccountRoutes(
  api: ManagementApi,
  keyGenerate: Handler,
): Record<string, { access: RouteAccess; handler: Handler }> {
  return {
    'POST /key/service-account/generate': {
      access: 'team',
      handler: (req, caller, storage) => {
        const b = api.parseBody(req, keyGenerateSchema);
        if (b.team_id === undefined || b.team_id === null) {
          throw new SpendGuardError(
            'BAD_REQUEST',
            'team_id is required for service account keys. Please specify `team_id` in the request body.',
            { param: 'team_id' },
          );
        }
        if (b.user_id !== undefined && b.user_id !== null) {
          throw new SpendGuardError(
            'BAD_REQUEST',
            'Invalid request: user_id is not supported: a service account key belongs to its team, not to a user (use /key/generate for a user’s key)',
            { param: 'user_id' },
          );
        }
        return keyGenerate(req, caller, storage);
      },
    },
  };
}
