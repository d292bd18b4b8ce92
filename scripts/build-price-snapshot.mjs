#!/usr/bin/env node
// Builds packages/core/src/pricing/snapshot.json, the compact price table that @spendguard/core ships,
// from LiteLLM's model_prices_and_context_window.json.
//
//   node scripts/build-price-snapshot.mjs [path/to/model_prices_and_context_window.json]
//
// Default input: ../shared/data/model_prices_and_context_window.json relative to the repo root.
//
// The snapshot keeps every entry that carries any price (any field whose name contains `cost`, or a
// `tiered_pricing` list), with every such field, plus `litellm_provider`, `mode`, `max_output_tokens`,
// `max_input_tokens` and `web_search_billing_unit` (Gemini grounding: per query or per grounded prompt).
// Everything else (capabilities, context sizes, sources) is dropped. The loader turns a row back into the
// LiteLLM entry it came from, so the snapshot and a user-supplied LiteLLM table go through the same code.
//
// Row format, one model per line (a price change is a one-line diff):
//   "name": [c0, c1, c2, c3, c4, c5, i, v, i, v, ...]
// c0..c5 are the values of `columns` (null when absent; trailing nulls trimmed when no pair follows); the
// pairs after them are (index into `fields`, value) for the rarer fields. Numbers are written in their
// shortest form that parses back to the very same double (2.5e-6 rather than 0.0000025).
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

/** Keys of the table that document it rather than price a model. */
const NOT_MODELS = new Set(['sample_spec', 'fallback_generalizations', 'last_updated']);

/** The positional columns: the fields (nearly) every row has. */
const COLUMNS = [
  'litellm_provider',
  'mode',
  'input_cost_per_token',
  'output_cost_per_token',
  'max_output_tokens',
  'cache_read_input_token_cost',
];

// The sparse fields spendguard prices with come first in a fixed order, so that regenerating from a newer
// table only appends indexes; any other cost field follows in alphabetical order.
const KNOWN_SPARSE_FIELDS = [
  'cache_creation_input_token_cost',
  'cache_creation_input_token_cost_above_1hr',
  'output_cost_per_reasoning_token',
  'input_cost_per_audio_token',
  'output_cost_per_audio_token',
  'input_cost_per_image_token',
  'output_cost_per_image_token',
  'input_cost_per_request',
  'search_context_cost_per_query',
  'tiered_pricing',
  'input_cost_per_token_batches',
  'output_cost_per_token_batches',
  'input_cost_per_token_priority',
  'output_cost_per_token_priority',
  'cache_read_input_token_cost_priority',
  'cache_creation_input_token_cost_priority',
  'input_cost_per_audio_token_priority',
  'input_cost_per_token_flex',
  'output_cost_per_token_flex',
  'cache_read_input_token_cost_flex',
  'cache_creation_input_token_cost_flex',
  'input_cost_per_token_above_128k_tokens',
  'output_cost_per_token_above_128k_tokens',
  'input_cost_per_token_above_200k_tokens',
  'output_cost_per_token_above_200k_tokens',
  'cache_read_input_token_cost_above_200k_tokens',
  'cache_creation_input_token_cost_above_200k_tokens',
  'cache_creation_input_token_cost_above_1hr_above_200k_tokens',
  'input_cost_per_token_above_200k_tokens_priority',
  'output_cost_per_token_above_200k_tokens_priority',
  'cache_read_input_token_cost_above_200k_tokens_priority',
  'input_cost_per_token_above_272k_tokens',
  'output_cost_per_token_above_272k_tokens',
  'cache_read_input_token_cost_above_272k_tokens',
  'cache_creation_input_token_cost_above_272k_tokens',
  'input_cost_per_token_above_272k_tokens_priority',
  'output_cost_per_token_above_272k_tokens_priority',
  'cache_read_input_token_cost_above_272k_tokens_priority',
  // Not a price: the context window bounds what a file the guard cannot read may cost.
  'max_input_tokens',
];

const isCostField = (field) => field.includes('cost') || field === 'tiered_pricing';
const isKeptField = (field) =>
  isCostField(field) ||
  COLUMNS.includes(field) ||
  field === 'max_input_tokens' ||
  field === 'web_search_billing_unit';

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

/** Checks a kept value: prices are non-negative finite numbers, possibly nested in objects and lists. */
function checkValue(where, field, value) {
  if (field === 'litellm_provider' || field === 'mode' || field === 'web_search_billing_unit') {
    if (typeof value !== 'string')
      throw new Error(`${where} should be a string, got ${JSON.stringify(value)}`);
    return;
  }
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) {
      throw new Error(`${where} should be a non-negative number, got ${JSON.stringify(value)}`);
    }
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      checkValue(`${where}[${i}]`, field, item);
    });
    return;
  }
  if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) checkValue(`${where}.${key}`, field, item);
    return;
  }
  throw new Error(`${where} should be a number, got ${JSON.stringify(value)}`);
}

const entries = [];
const sparseSeen = new Set();
for (const [name, entry] of Object.entries(source)) {
  if (NOT_MODELS.has(name) || entry === null || typeof entry !== 'object' || Array.isArray(entry)) continue;
  if (!Object.keys(entry).some(isCostField)) continue; // no price of any kind: nothing to ship
  const kept = {};
  for (const [field, value] of Object.entries(entry)) {
    if (!isKeptField(field) || value === null || value === undefined) continue;
    checkValue(`${inputPath}: ${name}.${field}`, field, value);
    kept[field] = value;
    if (!COLUMNS.includes(field)) sparseSeen.add(field);
  }
  entries.push([name, kept]);
}

const extraFields = [...sparseSeen].filter((field) => !KNOWN_SPARSE_FIELDS.includes(field)).sort();
const fields = [...KNOWN_SPARSE_FIELDS, ...extraFields];
const fieldIndex = new Map(fields.map((field, i) => [field, i]));

/** The shortest text of a number that parses back to the same double. */
function formatNumber(value) {
  const plain = String(value);
  const exponential = value.toExponential().replace('e+', 'e');
  return exponential.length < plain.length && Number(exponential) === value ? exponential : plain;
}

/** JSON.stringify, with numbers in their shortest exact form. */
function encode(value) {
  if (typeof value === 'number') return formatNumber(value);
  if (Array.isArray(value)) return `[${value.map(encode).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.entries(value)
      .map(([key, item]) => `${JSON.stringify(key)}:${encode(item)}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

const lines = [];
for (const [name, kept] of entries) {
  const row = COLUMNS.map((column) => kept[column] ?? null);
  const pairs = [];
  for (const field of fields) {
    if (kept[field] !== undefined) pairs.push(fieldIndex.get(field), kept[field]);
  }
  if (pairs.length === 0) while (row.length > 0 && row[row.length - 1] === null) row.pop();
  lines.push(`${JSON.stringify(name)}:${encode([...row, ...pairs])}`);
}

const sourceDate =
  process.env.SPENDGUARD_PRICES_DATE ??
  (typeof source.last_updated === 'string' ? source.last_updated : undefined) ??
  (inputPath === defaultInputPath ? DEFAULT_INPUT_DATE : null);
const meta = {
  source: "LiteLLM's model_prices_and_context_window.json (BerriAI/litellm, MIT licence)",
  sourceDate,
  sourceFile: relative(repoRoot, inputPath).split('\\').join('/'),
  generatedBy: 'scripts/build-price-snapshot.mjs',
  count: entries.length,
};
const text =
  `{"meta":${JSON.stringify(meta)},\n"columns":${JSON.stringify(COLUMNS)},\n` +
  `"fields":${JSON.stringify(fields)},\n"models":{\n${lines.join(',\n')}\n}}\n`;

// Never write a file that does not parse back to exactly the kept entries.
const check = JSON.parse(text);
for (const [name, kept] of entries) {
  const row = check.models[name];
  const decoded = {};
  COLUMNS.forEach((column, i) => {
    if (row[i] !== null && row[i] !== undefined) decoded[column] = row[i];
  });
  for (let i = COLUMNS.length; i < row.length; i += 2) decoded[check.fields[row[i]]] = row[i + 1];
  const sorted = (o) =>
    JSON.stringify(Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1))));
  if (sorted(decoded) !== sorted(kept))
    throw new Error(`snapshot row of ${name} does not decode to its entry`);
}
writeFileSync(outputPath, text);

const bytes = statSync(outputPath).size;
console.log(
  `wrote ${relative(process.cwd(), outputPath)}: ${entries.length} models, ${fields.length + COLUMNS.length} fields, ` +
    `${bytes} bytes (${(bytes / 1024).toFixed(1)} KiB) from ${relative(process.cwd(), inputPath)}`,
);
