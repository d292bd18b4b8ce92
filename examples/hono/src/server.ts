import { serve } from '@hono/node-server';
import { startSimulator } from '@spendguard/core/testing';
import { createExampleApp } from './app.js';

const port = Number(process.env.PORT ?? 4000);
let masterKey = process.env.SPENDGUARD_MASTER_KEY;
if (!masterKey) {
  masterKey = 'sk-master';
  console.warn(
    '[demo] SPENDGUARD_MASTER_KEY is not set: using the demo master key "sk-master". Never do this in production.',
  );
}

// The demo's LLM provider: the built-in simulator (OpenAI wire format, streaming included), unless
// LLM_BASE_URL points at a real OpenAI-compatible endpoint.
const simulator = process.env.LLM_BASE_URL
  ? null
  : await startSimulator({ latencyMs: Number(process.env.SIM_LATENCY_MS ?? 0) });
const providerBaseUrl = process.env.LLM_BASE_URL ?? simulator!.url;

const { app, guard } = createExampleApp({ providerBaseUrl, masterKey });
const server = serve({ fetch: app.fetch, port }, () => {
  console.log(`spendguard demo on http://localhost:${port}`);
  console.log(`  provider: ${providerBaseUrl}${simulator ? ' (built-in simulator)' : ''}`);
  console.log(`  storage:  ${process.env.SPENDGUARD_DB ?? './spendguard.db'} (SQLite)`);
  console.log(
    `  try:      curl -X POST http://localhost:${port}/team/new -H "Authorization: Bearer ${masterKey === 'sk-master' ? 'sk-master' : '<master key>'}" -d '{"team_alias": "frontend-team", "max_budget": 1000}'`,
  );
});

async function shutdown() {
  server.close();
  await guard?.close();
  await simulator?.close();
  process.exit(0);
}
process.once('SIGINT', () => void shutdown());
process.once('SIGTERM', () => void shutdown());
