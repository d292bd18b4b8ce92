/** What the benchmarks share: the median, main-thread CPU, and the chat call they push through the pipeline. */
import { readFileSync } from 'node:fs';

/**
 * CPU time a process's main thread has used so far, µs: from /proc/<pid>/task/<pid>/schedstat
 * (nanoseconds; the stat file's user + system count 10 ms ticks, too coarse for a round of a few
 * thousand requests), else from the stat file; NaN where /proc is missing.
 */
export function mainThreadCpuUs(pid: number): number {
  try {
    const ns = Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]);
    if (ns > 0) return ns / 1000;
    const fields = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100; // clock ticks at USER_HZ = 100
  } catch {
    return Number.NaN;
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The request every in-process benchmark admits. */
export const reqBody = {
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content: 'Hello there' }],
  max_tokens: 16,
};
export const bodyBytes = Buffer.byteLength(JSON.stringify(reqBody));

/** A chat completion of `chars` characters of text, with its usage, as the provider sends it. */
export function chatResponse(chars: number): Buffer {
  return Buffer.from(
    JSON.stringify({
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created: 1,
      model: 'gpt-4o-mini-2024-07-18',
      choices: [
        { index: 0, message: { role: 'assistant', content: 'x'.repeat(chars) }, finish_reason: 'stop' },
      ],
      usage: {
        prompt_tokens: 11,
        completion_tokens: 16,
        total_tokens: 27,
        prompt_tokens_details: { cached_tokens: 0 },
      },
    }),
  );
}
