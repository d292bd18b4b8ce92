// Setup file of the mutation runs only (vitest.mutation.config.ts). Stryker reruns a group's tests once
// per mutant and each rerun evaluates the sources again, so core's token counter would build its
// tiktoken encoders (seconds on a loaded machine) for every mutant. tiktoken itself is loaded once per
// test process (Node's own module cache); this makes its `get_encoding` hand back the encoder it built
// the first time. Counting is unchanged: an encoder is never freed, and holds no state between calls.
import { createRequire } from 'node:module';
import { GROUPS } from './groups.mjs';

const tiktoken = createRequire(import.meta.url)('tiktoken') as typeof import('tiktoken');
const memo = globalThis as { __spendguardEncoders?: Map<string, unknown> };
if (!memo.__spendguardEncoders) {
  const built = new Map<string, unknown>();
  memo.__spendguardEncoders = built;
  const getEncoding = tiktoken.get_encoding;
  tiktoken.get_encoding = ((name: Parameters<typeof getEncoding>[0]) => {
    let encoder = built.get(name);
    if (!encoder) {
      encoder = getEncoding(name);
      built.set(name, encoder);
    }
    return encoder;
  }) as typeof getEncoding;
}

// The encoders a group's tests count with, built here once, before any test's timeout runs.
const group = GROUPS[(process.env.STRYKER_GROUP ?? 'pricing') as keyof typeof GROUPS];
for (const name of 'encoders' in group ? group.encoders : []) {
  tiktoken.get_encoding(name as Parameters<typeof tiktoken.get_encoding>[0]);
}
