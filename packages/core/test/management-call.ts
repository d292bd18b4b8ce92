import type { SpendGuard } from '../src/index.js';

/** A management API request as the master key, from a test: its status and JSON body. */
export async function manage(
  guard: SpendGuard,
  master: string,
  method: 'GET' | 'POST',
  path: string,
  json?: unknown,
): Promise<{ status: number; body: any }> {
  const [route, search] = path.split('?');
  const res = await guard.management.handle({
    method,
    path: route!,
    query: new URLSearchParams(search ?? ''),
    header: (n) => (n === 'authorization' ? `Bearer ${master}` : undefined),
    body: json === undefined ? '' : JSON.stringify(json),
  });
  if (!res) throw new Error(`${method} ${path} is not a management route`);
  return { status: res.status, body: res.body };
}
