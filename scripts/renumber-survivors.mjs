#!/usr/bin/env node
// Moves the line numbers of the survivors named in mutation/survivors/<group>.md to where those lines
// are now: code added or removed above a survivor shifts its line, and an explanation under the old
// number no longer matches the survivor `pnpm test:mutation` reports. For each entry
// (`- path:line:column Mutator ...`), `git blame` finds the commit that wrote the entry; `git diff`
// from that commit to the work tree then maps the line. An entry whose line itself changed since is
// left as it is and printed (read it again: the mutant may be gone, or need a new explanation).
//   node scripts/renumber-survivors.mjs [group ...]     (default: every file; rewrites them in place)
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'mutation', 'survivors');
const git = (...args) => execFileSync('git', args, { cwd: root, encoding: 'utf8', maxBuffer: 1 << 28 });
const asked = process.argv.slice(2);
const files = readdirSync(dir).filter(
  (f) => f.endsWith('.md') && (asked.length === 0 || asked.includes(f.slice(0, -3))),
);

/** The hunks of `git diff -U0 <commit> -- <path>` (to the work tree): [oldStart, oldCount, newStart, newCount]. */
const hunkCache = new Map();
function hunks(commit, path) {
  const k = `${commit} ${path}`;
  if (!hunkCache.has(k)) {
    const out = git('diff', '-U0', commit, '--', path);
    const hs = [];
    for (const m of out.matchAll(/^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/gm)) {
      hs.push([
        Number(m[1]),
        m[2] === undefined ? 1 : Number(m[2]),
        Number(m[3]),
        m[4] === undefined ? 1 : Number(m[4]),
      ]);
    }
    hunkCache.set(k, hs);
  }
  return hunkCache.get(k);
}

/** Line `line` of `path` at `commit`, where it is now; null when that line itself changed. */
function mapLine(commit, path, line) {
  let shift = 0;
  for (const [os, oc, , nc] of hunks(commit, path)) {
    // A pure insertion (oc 0) sits after line os; a change covers os..os+oc-1.
    const end = oc === 0 ? os : os + oc - 1;
    if (oc > 0 && line >= os && line <= end) return null;
    if (line > end || (oc === 0 && line > os)) shift += nc - oc;
    else break;
  }
  return line + shift;
}

let moved = 0;
const stale = [];
for (const f of files) {
  const file = join(dir, f);
  const text = readFileSync(file, 'utf8').split('\n');
  // The commit that wrote each line of the file (following lines moved from other files).
  const blame = git('blame', '-C', '-C', '-M', '--line-porcelain', '--', file)
    .split('\n')
    .filter((l) => /^[0-9a-f]{40} /.test(l))
    .map((l) => l.slice(0, 40));
  const uncommitted = '0'.repeat(40);
  for (let i = 0; i < text.length; i++) {
    const m = /^(- (?:~~)?)([^\s:]+\.ts):(\d+):(\d+)( .*)$/.exec(text[i]);
    if (!m) continue;
    const commit = blame[i];
    if (!commit || commit === uncommitted) continue;
    const now = mapLine(commit, m[2], Number(m[3]));
    if (now === null)
      stale.push(`${f}:${i + 1}: ${m[2]}:${m[3]}:${m[4]} (changed since ${commit.slice(0, 8)})`);
    else if (now !== Number(m[3])) {
      text[i] = `${m[1]}${m[2]}:${now}:${m[4]}${m[5]}`;
      moved += 1;
    }
  }
  writeFileSync(file, text.join('\n'));
}
console.log(`${moved} entries moved to their lines' current numbers`);
if (stale.length > 0)
  console.log(`${stale.length} entries whose line changed (left as they are):\n${stale.join('\n')}`);
