#!/usr/bin/env node
// Mutation testing of core's pricing, budget and rate-limit rules, storage gate and metering with
// StrykerJS: `pnpm test:mutation [group ...]` (groups in mutation/groups.mjs; default all), one Stryker
// run per group, one after the other. Reports land in .test-artifacts/mutation/<group>/ (HTML and JSON)
// and a summary of every group run in .test-artifacts/mutation/summary.md, which lists the survivors
// mutation/survivors/<group>.md does not explain. Not part of `pnpm test`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GROUPS } from '../mutation/groups.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, '.test-artifacts', 'mutation');
// `--summary`: only rebuild the summary from the reports already there (after editing survivors.md).
const summaryOnly = process.argv.includes('--summary');
// `--recheck`: runs again only the lines of the last full run's survivors (after adding tests), and
// counts a survivor the recheck killed as killed. A full run (without it) replaces both reports.
const recheck = process.argv.includes('--recheck');
const asked = summaryOnly ? [] : process.argv.slice(2).filter((a) => !a.startsWith('--'));
for (const name of asked) {
  if (!GROUPS[name]) throw new Error(`unknown group ${name}; one of ${Object.keys(GROUPS).join(', ')}`);
}
const names = summaryOnly ? [] : asked.length > 0 ? asked : Object.keys(GROUPS);
mkdirSync(out, { recursive: true });

const stryker = join(root, 'node_modules', '.bin', 'stryker');
let failed = false;
for (const name of names) {
  const started = Date.now();
  const env = { ...process.env, STRYKER_GROUP: name };
  if (recheck) {
    const ranges = survivorRanges(name);
    if (ranges.length === 0) continue;
    env.STRYKER_MUTATE = ranges.join(',');
  } else {
    rmSync(join(out, name, 'recheck'), { recursive: true, force: true });
  }
  const cpuBefore = childCpuSeconds();
  const loadBefore = loadavg()[0];
  const run = spawnSync(stryker, ['run', 'mutation/stryker.config.mjs'], {
    cwd: root,
    stdio: 'inherit',
    env,
  });
  const minutes = ((Date.now() - started) / 60_000).toFixed(1);
  if (run.status !== 0) {
    failed = true;
    console.error(`stryker failed on group ${name} (exit ${run.status})`);
    continue;
  }
  // The wall minutes, then the CPU minutes of Stryker and its test processes (what a quiet machine
  // needs, over one core per test process) and the load average at the start and the end.
  const cpu = cpuBefore === null ? '?' : ((childCpuSeconds() - cpuBefore) / 60).toFixed(1);
  const load = `${loadBefore.toFixed(1)}-${loadavg()[0].toFixed(1)}`;
  writeFileSync(
    join(out, name, recheck ? 'recheck-minutes.txt' : 'minutes.txt'),
    `${minutes}\ncpu ${cpu}\nload ${load}\n`,
  );
}

/**
 * CPU seconds (user + system) of this process's finished children and theirs (Linux: `cutime` and
 * `cstime` of /proc/self/stat, in clock ticks of 1/100 s); null elsewhere.
 */
function childCpuSeconds() {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[13]) + Number(fields[14])) / 100;
  } catch {
    return null;
  }
}

/** `file:line-line` for every line of the last full run with a surviving or uncovered mutant. */
function survivorRanges(name) {
  const file = join(out, name, 'mutation.json');
  if (!existsSync(file)) throw new Error(`--recheck ${name}: no full run to recheck (${file})`);
  const ranges = new Set();
  for (const [path, { mutants }] of Object.entries(JSON.parse(readFileSync(file, 'utf8')).files)) {
    for (const m of mutants) {
      if (m.status !== 'Survived' && m.status !== 'NoCoverage') continue;
      ranges.add(`${relative(root, resolve(root, path))}:${m.location.start.line}-${m.location.end.line}`);
    }
  }
  return [...ranges];
}

/** A mutant's identity across runs: where it is, what it does. */
const mutantKey = (path, m) =>
  `${relative(root, resolve(root, path))}:${m.location.start.line}:${m.location.start.column}:${m.location.end.line}:${m.location.end.column}:${m.mutatorName}:${m.replacement}`;

/** Counts per file and for the group, from Stryker's JSON report (mutation-testing-report-schema). */
function summarise(name) {
  const file = join(out, name, 'mutation.json');
  if (!existsSync(file)) return null;
  const report = JSON.parse(readFileSync(file, 'utf8'));
  // A recheck's statuses replace the full run's for the mutants it ran again.
  const recheckFile = join(out, name, 'recheck', 'mutation.json');
  const again = new Map();
  if (existsSync(recheckFile)) {
    for (const [path, { mutants }] of Object.entries(JSON.parse(readFileSync(recheckFile, 'utf8')).files)) {
      for (const m of mutants) again.set(mutantKey(path, m), m.status);
    }
    for (const [path, { mutants }] of Object.entries(report.files)) {
      for (const m of mutants) m.status = again.get(mutantKey(path, m)) ?? m.status;
    }
  }
  const rows = [];
  const total = { killed: 0, survived: 0, timeout: 0, noCoverage: 0, other: 0 };
  for (const [path, { mutants }] of Object.entries(report.files)) {
    const c = { killed: 0, survived: 0, timeout: 0, noCoverage: 0, other: 0 };
    for (const m of mutants) {
      const k = { Killed: 'killed', Survived: 'survived', Timeout: 'timeout', NoCoverage: 'noCoverage' }[
        m.status
      ];
      c[k ?? 'other'] += 1;
    }
    for (const k of Object.keys(total)) total[k] += c[k];
    rows.push([relative(root, resolve(root, path)), c]);
  }
  const survivors = [];
  for (const [path, { mutants }] of Object.entries(report.files)) {
    for (const m of mutants) {
      if (m.status !== 'Survived' && m.status !== 'NoCoverage') continue;
      survivors.push(survivorId(relative(root, resolve(root, path)), m));
    }
  }
  const minutesFile = join(out, name, 'minutes.txt');
  const recheckMinutes = join(out, name, 'recheck-minutes.txt');
  const minutes =
    (existsSync(minutesFile) ? timing(minutesFile) : '?') +
    (again.size > 0 && existsSync(recheckMinutes) ? ` + ${timing(recheckMinutes)} (recheck)` : '');
  return { rows, total, minutes, survivors };
}

/** `12.3 (CPU 8.1, load 2.0-3.1)` from a minutes file (older ones hold the wall minutes only). */
function timing(file) {
  const [wall, cpu, load] = readFileSync(file, 'utf8').trim().split('\n');
  if (cpu === undefined) return wall;
  return `${wall} (CPU ${cpu.replace('cpu ', '')}, load ${(load ?? '').replace('load ', '')})`;
}

/**
 * A survivor as mutation/survivors/<group>.md names it: `file:line:column Mutator` and the replacement, one
 * line, so that a survivor nobody explained stands out (below).
 */
function survivorId(path, m) {
  const replacement = (m.replacement ?? '').replace(/\s+/g, ' ').slice(0, 60);
  return `${path}:${m.location.start.line}:${m.location.start.column} ${m.mutatorName} \`${replacement}\``;
}
// Every group's explained survivors, mutation/survivors/<group>.md.
const explainedDir = join(root, 'mutation', 'survivors');
const explained = existsSync(explainedDir)
  ? readdirSync(explainedDir)
      .filter((f) => f.endsWith('.md'))
      .map((f) => readFileSync(join(explainedDir, f), 'utf8'))
      .join('\n')
  : '';

const score = (c) => {
  const detected = c.killed + c.timeout;
  const valid = detected + c.survived + c.noCoverage;
  return valid === 0 ? 'n/a' : `${((100 * detected) / valid).toFixed(1)} %`;
};
const lines = [
  '| group / file | killed | survived | timeout | no coverage | score | minutes |',
  '|---|---|---|---|---|---|---|',
];
for (const name of Object.keys(GROUPS)) {
  const s = summarise(name);
  if (!s) continue;
  const t = s.total;
  lines.push(
    `| **${name}** | ${t.killed} | ${t.survived} | ${t.timeout} | ${t.noCoverage} | ${score(t)} | ${s.minutes} |`,
  );
  for (const [path, c] of s.rows) {
    lines.push(`| ${path} | ${c.killed} | ${c.survived} | ${c.timeout} | ${c.noCoverage} | ${score(c)} | |`);
  }
}
const unexplained = [];
for (const name of Object.keys(GROUPS)) {
  const s = summarise(name);
  if (!s) continue;
  writeFileSync(join(out, name, 'survivors.txt'), s.survivors.map((l) => `${l}\n`).join(''));
  for (const id of s.survivors) if (!explained.includes(id)) unexplained.push(id);
}
if (unexplained.length > 0) {
  lines.push('', `Survivors not explained in mutation/survivors/<group>.md (${unexplained.length}):`, '');
  for (const id of unexplained) lines.push(`- ${id}`);
}
writeFileSync(join(out, 'summary.md'), `${lines.join('\n')}\n`);
console.log(`\n${lines.join('\n')}\n\n(${relative(root, join(out, 'summary.md'))})`);
process.exit(failed ? 1 : 0);
