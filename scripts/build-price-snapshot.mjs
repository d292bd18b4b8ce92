#!/usr/bin/env node
// Builds packages/core/src/pricing/snapshot.json, the compact price table that @spendguard/core ships,
// from LiteLLM's model_prices_and_context_window.json.
//
//   node scripts/build-price-snapshot.mjs [path/to/model_prices_and_context_window.json]
//
// Default input: ../shared/data/model_prices_and_context_window.json relative to the repo root.
// The output keeps one row per priced model, values in the order of `fields`, numbers exactly as in the
// source, trailing absent fields trimmed and the others null, so that loading it is one JSON.parse.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const defaultInputPath = resolve(repoRoot, '../shared/data/model_prices_and_context_window.json');
const inputPath = resolve(process.argv[2] ?? defaultInputPath);
const outputPath = resolve(repoRoot, 'packages/core/src/pricing/snapshot.json');

// Date of the copy of LiteLLM's table in ../shared/data (see its README): that copy carries none. For
// another copy, the date comes from SPENDGUARD_PRICES_DATE or the table's own `last_updated` key.
const DEFAULT_INPUT_DATE = '2026-07-24';

// Strings first and the rarest fields last, so that trimming trailing nulls saves the most.
const FIELDS = [
  ['litellm_provider', 'string'],
  ['mode', 'string'],
  ['input_cost_per_token', 'number'],
  ['output_cost_per_token', 'number'],
  ['max_output_tokens', 'number'],
  ['cache_read_input_token_cost', 'number'],
  ['cache_creation_input_token_cost', 'number'],
  ['output_cost_per_reasoning_token', 'number'],
];

let source;
try {
  source = JSON.parse(readFileSync(inputPath, 'utf8'));
} catch (error) {
  console.error(`cannot read LiteLLM's price table from ${inputPath}: ${error.message}`);
  console.error(
    'usage: node scripts/build-price-snapshot.mjs [path/to/model_prices_and_context_window.json]',
  );
  process.exit(1);
}
if (source === null || typeof source !== 'object' || Array.isArray(source)) {
  throw new Error(`${inputPath}: expected LiteLLM's model price table (a JSON object keyed by model name)`);
}

const models = {};
let count = 0;
for (const [name, entry] of Object.entries(source)) {
  if (name === 'sample_spec' || entry === null || typeof entry !== 'object' || Array.isArray(entry)) continue;
  if (typeof entry.input_cost_per_token !== 'number' && typeof entry.output_cost_per_token !== 'number') {
    continue;
  }
  const row = FIELDS.map(([field, type]) => {
    const value = entry[field];
    if (value === undefined || value === null) return null;
    if (typeof value !== type || (type === 'number' && !Number.isFinite(value))) {
      throw new Error(`${inputPath}: ${name}.${field} should be a ${type}, got ${JSON.stringify(value)}`);
    }
    return value;
  });
  while (row.length > 0 && row[row.length - 1] === null) row.pop();
  models[name] = row;
  count++;
}

const sourceDate =
  process.env.SPENDGUARD_PRICES_DATE ??
  (typeof source.last_updated === 'string' ? source.last_updated : undefined) ??
  (inputPath === defaultInputPath ? DEFAULT_INPUT_DATE : null);
const snapshot = {
  meta: {
    source: "LiteLLM's model_prices_and_context_window.json (BerriAI/litellm, MIT licence)",
    sourceDate,
    sourceFile: relative(repoRoot, inputPath).split('\\').join('/'),
    generatedBy: 'scripts/build-price-snapshot.mjs',
    count,
  },
  fields: FIELDS.map(([field]) => field),
  models,
};

// One model per line: still compact, but a price change shows up as a one-line diff.
const lines = Object.entries(models).map(([name, row]) => `${JSON.stringify(name)}:${JSON.stringify(row)}`);
const text = `{"meta":${JSON.stringify(snapshot.meta)},\n"fields":${JSON.stringify(snapshot.fields)},\n"models":{\n${lines.join(',\n')}\n}}\n`;
JSON.parse(text); // never write a file that does not parse
writeFileSync(outputPath, text);

const bytes = statSync(outputPath).size;
console.log(
  `wrote ${relative(process.cwd(), outputPath)}: ${count} models, ${bytes} bytes (${(bytes / 1024).toFixed(1)} KiB) from ${relative(process.cwd(), inputPath)}`,
);
