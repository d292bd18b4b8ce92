// What bench/profile-route.ts and bench/alloc-route.ts share: the key a guarded route server is called
// with, and a fixed number of chat calls at 64 connections.
import autocannon from 'autocannon';

/** The chat call every route bench sends. */
export const BODY = JSON.stringify({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content: 'Write one short sentence about budgets.' }],
  max_tokens: 16,
});

/**
 * A team, a user in it and a key of that user, budgets far above what a bench spends; the key.
 * `BENCH_TEAM_KEY=1`: the key is the team's (owned by that user, LiteLLM's usual setup), so a call
 * charges the team's budgets and counts on the user's counter without being held to the user's budget.
 */
export async function benchKey(url: string): Promise<string> {
  const post = async (path: string, body: unknown) =>
    (await (
      await fetch(url + path, {
        method: 'POST',
        headers: { authorization: 'Bearer sk-bench-master' },
        body: JSON.stringify(body),
      })
    ).json()) as { key: string };
  await post('/team/new', { team_id: 'bench-team', max_budget: 1e6 });
  await post('/user/new', { user_id: 'bench-user', team_id: 'bench-team', max_budget: 1e6 });
  return (
    await post('/key/generate', {
      user_id: 'bench-user',
      ...(process.env.BENCH_TEAM_KEY ? { team_id: 'bench-team' } : {}),
      max_budget: 1e6,
    })
  ).key;
}

/** `amount` chat calls to the route server at `url`, 64 at a time; throws unless every one is a 2xx. */
export async function chatLoad(url: string, key: string | null, amount: number): Promise<void> {
  const r = await autocannon({
    url: `${url}/v1/chat/completions`,
    method: 'POST',
    connections: 64,
    amount,
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: BODY,
  });
  if (r.non2xx || r.errors) throw new Error(`${r.non2xx} non-2xx, ${r.errors} errors`);
}
