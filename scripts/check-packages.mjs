#!/usr/bin/env node
/**
 * `pnpm check:packages`: every publishable package as a user gets it.
 *
 * 1. Packs each package with `pnpm pack` (its `prepack` builds it; workspace ranges become versions)
 *    and checks the tarball with arethetypeswrong and publint, and its manifest: the published
 *    `exports` are the repository's without the `spendguard-source` condition, which comes first there.
 * 2. Installs the tarballs with npm (never pnpm, never the workspace) into fresh apps in a temporary
 *    folder, then starts each: CommonJS and ESM, Express 4, Express 5 and Hono, and TypeScript apps
 *    type-checked with `module: node16` (CommonJS and ESM) and `moduleResolution: bundler`, with
 *    `skipLibCheck: false` so that the shipped `.d.ts`/`.d.cts` are checked too. Each app serves a
 *    guarded route in front of the simulated provider of `@spendguard/core/testing`, makes a call with a
 *    new virtual key, and checks its cost against `calculateCost` of the usage the provider reported and
 *    the key's budget (typed query and `/key/info`).
 * 3. A Postgres-only app (`@spendguard/storage-pg`, no SQLite): its node_modules must hold no
 *    better-sqlite3; it makes the same call on Postgres, and a guard left without storage answers 503
 *    naming `@spendguard/storage-sqlite`.
 *
 * Postgres: DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test. When none answers the Postgres
 * app is installed and checked but not run, with a notice, except in CI (`CI` set), where that fails.
 * KEEP_CHECK_DIR=1 keeps the temporary folder. Needs the npm registry (express, hono, typescript, ...).
 * The SQLite apps reuse the workspace's build of better-sqlite3 (the same version) rather than compile
 * it again; CHECK_PACKAGES_COMPILE=1 runs its install script as a user's install does.
 */
import { execFile, spawn } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const started = Date.now();
const problems = [];
const log = (message) => console.log(`[check:packages] ${message}`);
const seconds = () => `${((Date.now() - started) / 1000).toFixed(0)} s`;

/** Runs a command; its output is printed only when it fails (then the failure is recorded). */
async function sh(what, file, args, options = {}) {
  try {
    const { stdout, stderr } = await run(file, args, { maxBuffer: 64 * 1024 * 1024, ...options });
    return `${stdout}${stderr}`;
  } catch (error) {
    const output = `${error.stdout ?? ''}${error.stderr ?? ''}`.trim();
    throw new Error(`${what} failed (${file} ${args.join(' ')}):\n${output || error.message}`);
  }
}

async function check(what, fn) {
  try {
    const detail = await fn();
    log(`ok   ${what}${detail ? `: ${detail}` : ''}`);
    return true;
  } catch (error) {
    problems.push(what);
    log(`FAIL ${what}\n${String(error.message ?? error).replace(/^/gm, '     ')}`);
    return false;
  }
}

// --- 1. pack, attw, publint ----------------------------------------------------------------------------

const packages = readdirSync(join(root, 'packages'))
  .map((dir) => join(root, 'packages', dir))
  .filter((dir) => existsSync(join(dir, 'package.json')))
  .map((dir) => ({ dir, manifest: JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) }))
  .filter(({ manifest }) => !manifest.private);

const work = mkdtempSync(join(tmpdir(), 'spendguard-check-packages-'));
const tarballs = join(work, 'tarballs');
mkdirSync(tarballs);
log(`${packages.length} packages: ${packages.map((p) => p.manifest.name).join(', ')}; working in ${work}`);

/** The repository's exports without the source condition: what a published manifest must carry. */
function withoutSource(exports) {
  return Object.fromEntries(
    Object.entries(exports).map(([path, target]) => [
      path,
      typeof target === 'string'
        ? target
        : Object.fromEntries(
            Object.entries(target).filter(([condition]) => condition !== 'spendguard-source'),
          ),
    ]),
  );
}

const tarballOf = new Map();
// Each pack builds its package (esbuild, then the .d.ts for ESM and CommonJS), and a package's
// declarations are built against those of the packages it depends on: pack in dependency order, the
// packages of one level two at a time.
const internal = (manifest) =>
  Object.keys({ ...manifest.dependencies, ...manifest.devDependencies, ...manifest.peerDependencies }).filter(
    (name) => packages.some((p) => p.manifest.name === name && name !== manifest.name),
  );
const levels = [];
const placed = new Set();
while (placed.size < packages.length) {
  const level = packages.filter(
    (p) => !placed.has(p.manifest.name) && internal(p.manifest).every((name) => placed.has(name)),
  );
  if (level.length === 0) throw new Error('a dependency cycle between the packages');
  for (const p of level) placed.add(p.manifest.name);
  levels.push(level);
}
for (const level of levels) {
  for (let i = 0; i < level.length; i += 2) {
    await Promise.all(
      level.slice(i, i + 2).map(({ dir, manifest }) =>
        check(`pack ${manifest.name}`, async () => {
          const out = await sh('pnpm pack', 'pnpm', ['pack', '--pack-destination', tarballs], { cwd: dir });
          const file = out
            .split('\n')
            .map((line) => line.trim())
            .find((line) => line.endsWith('.tgz'));
          if (!file || !existsSync(file)) throw new Error(`no tarball in the output of pnpm pack:\n${out}`);
          tarballOf.set(manifest.name, file);
          return relative(work, file);
        }),
      ),
    );
  }
}

for (const { manifest } of packages) {
  const tarball = tarballOf.get(manifest.name);
  if (!tarball) continue;
  await check(`manifest of ${manifest.name}`, async () => {
    const packed = JSON.parse(
      await sh('tar', 'tar', ['-xzOf', tarball, 'package/package.json'], { cwd: work }),
    );
    const wrong = [];
    for (const [path, target] of Object.entries(manifest.exports)) {
      if (typeof target !== 'string' && Object.keys(target)[0] !== 'spendguard-source')
        wrong.push(`exports["${path}"]: the spendguard-source condition must come first`);
    }
    if (JSON.stringify(packed.exports) !== JSON.stringify(withoutSource(manifest.exports)))
      wrong.push('publishConfig.exports differs from exports without the spendguard-source condition');
    for (const field of ['repository', 'homepage', 'keywords', 'engines', 'license']) {
      if (!packed[field]) wrong.push(`no "${field}"`);
    }
    if (packed.publishConfig?.access !== 'public') wrong.push('publishConfig.access is not "public"');
    // pnpm drops the prepack script from the packed manifest: it is the repository's that must build.
    if (!manifest.scripts?.prepack)
      wrong.push('no prepack script (a tarball of an unbuilt clone would be empty)');
    for (const [name, range] of Object.entries({ ...packed.dependencies, ...packed.peerDependencies })) {
      if (String(range).startsWith('workspace:')) wrong.push(`${name} kept its workspace range`);
      else if (!name.startsWith('@spendguard/') && /^\d/.test(String(range)))
        wrong.push(`${name} is pinned (${range}): libraries take ranges`);
    }
    const files = (await sh('tar', 'tar', ['-tzf', tarball])).split('\n');
    for (const file of [
      'package/LICENSE',
      'package/README.md',
      'package/dist/index.js',
      'package/dist/index.cjs',
    ])
      if (!files.includes(file)) wrong.push(`the tarball has no ${file.slice('package/'.length)}`);
    if (wrong.length > 0) throw new Error(wrong.join('\n'));
    return `${files.filter(Boolean).length} files`;
  });
  await check(`arethetypeswrong ${manifest.name}`, async () => {
    await sh('attw', 'pnpm', ['exec', 'attw', '--format', 'ascii', tarball], { cwd: root });
  });
  await check(`publint ${manifest.name}`, async () => {
    const out = await sh('publint', 'pnpm', ['exec', 'publint', '--strict', tarball], { cwd: root });
    if (!out.includes('All good')) throw new Error(out);
  });
}
log(`packed and linted (${seconds()})`);
if (tarballOf.size !== packages.length) finish();

// --- 2. apps on the tarballs -------------------------------------------------------------------------

const file = (name) => `file:${tarballOf.get(name)}`;
/** Every @spendguard dependency, direct or transitive, comes from the tarballs, never the registry. */
const overrides = Object.fromEntries([...tarballOf.keys()].map((name) => [name, file(name)]));

/**
 * What every app does once it serves: a key with a $1 budget, one guarded chat completion to the
 * simulator, then the cost and the budget checked. `calculateCost` (the core's main entry, loaded the
 * app's way) prices the usage the provider reported, apart from the guard's own metering.
 */
const SCENARIO = `
async function scenario(base, guard, calculateCost) {
  const admin = { authorization: 'Bearer sk-check-master', 'content-type': 'application/json' };
  const generated = await fetch(base + '/key/generate', { method: 'POST', headers: admin, body: JSON.stringify({ max_budget: 1 }) });
  if (generated.status !== 200) throw new Error('/key/generate answered ' + generated.status + ': ' + (await generated.text()));
  const { key } = await generated.json();
  const call = await fetch(base + '/v1/chat/completions', {
    method: 'POST',
    headers: { authorization: 'Bearer ' + key, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello from a packed install' }], max_tokens: 16 }),
  });
  const text = await call.text();
  if (call.status !== 200) throw new Error('the guarded call answered ' + call.status + ': ' + text);
  const usage = JSON.parse(text).usage;
  const cost = Number(call.headers.get('x-litellm-response-cost'));
  const expected = calculateCost('gpt-4o-mini', usage).total;
  if (!(expected > 0) || cost !== expected) throw new Error('cost ' + cost + ', calculateCost of the usage ' + expected);
  let budget = await guard.budgets.remaining({ key });
  // The settlement is written when the response has finished on the server: a few turns at most.
  for (let turn = 0; turn < 1000 && budget.spend !== cost; turn++) {
    await new Promise((resolve) => setImmediate(resolve));
    budget = await guard.budgets.remaining({ key });
  }
  if (budget.maxBudget !== 1 || budget.spend !== cost) throw new Error('budget ' + JSON.stringify(budget));
  const info = await (await fetch(base + '/key/info?key=' + key, { headers: admin })).json();
  if (info.info.spend !== cost) throw new Error('/key/info ' + JSON.stringify(info.info));
  return { cost, remaining: budget.remaining };
}
`;

const expressRoute = (ts) => `
  app.post('/v1/chat/completions', express.json(), async (req${ts ? ': express.Request' : ''}, res${ts ? ': express.Response' : ''}) => {
    const upstream = await fetch(simulator.url + '/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(req.body),
    });
    res.status(upstream.status).type('application/json').send(await upstream.text());
  });`;

const honoRoute = `
  app.post('/v1/chat/completions', async (c) => {
    const upstream = await fetch(simulator.url + '/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(await c.req.json()),
    });
    return new Response(upstream.body, { status: upstream.status, headers: { 'content-type': 'application/json' } });
  });`;

/** The body of an app's main: start, run the scenario, print its result, stop. */
function main({ framework, ts, storage }) {
  const any = ts ? ': any' : '';
  const serve =
    framework === 'hono'
      ? `
  const app = new Hono();
  const mw = spendGuard(${storage});
  app.route('/', mw.admin);
  app.use('/v1/*', mw);${honoRoute}
  const server = await new Promise${ts ? '<any>' : ''}((resolve) => {
    const s${any} = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });`
      : `
  const app = express();
  const mw = spendGuard(${storage});
  app.use(mw.admin);
  app.use('/v1', mw);${expressRoute(ts)}
  const server = await new Promise${ts ? '<any>' : ''}((resolve) => {
    const s${any} = app.listen(0, '127.0.0.1', () => resolve(s));
  });`;
  return `${SCENARIO.replace('async function scenario(base, guard, calculateCost)', `async function scenario(base${any}, guard${any}, calculateCost${any})`)}
async function main() {
  const simulator = await startSimulator();${serve}
  const base = 'http://127.0.0.1:' + server.address().port;
  try {
    const result = await scenario(base, mw.guard, calculateCost);
    console.log('RESULT ' + JSON.stringify(result));
  } finally {
    server.close();
    await mw.guard.close();
    await simulator.close();
  }
}
main().catch((error) => {
  console.error(error);
  process.exit(1);
});
`;
}

const imports = {
  cjs: {
    express: `const express = require('express');\nconst { spendGuard } = require('@spendguard/express');\n`,
    hono: `const { Hono } = require('hono');\nconst { serve } = require('@hono/node-server');\nconst { spendGuard } = require('@spendguard/hono');\n`,
    core: `const { calculateCost } = require('@spendguard/core');\nconst { startSimulator } = require('@spendguard/core/testing');\n`,
  },
  esm: {
    express: `import express from 'express';\nimport { spendGuard } from '@spendguard/express';\n`,
    hono: `import { Hono } from 'hono';\nimport { serve } from '@hono/node-server';\nimport { spendGuard } from '@spendguard/hono';\n`,
    core: `import { calculateCost } from '@spendguard/core';\nimport { startSimulator } from '@spendguard/core/testing';\n`,
  },
};

// The zero-config default (SQLite from SPENDGUARD_DB, master key from SPENDGUARD_MASTER_KEY) in some
// apps, explicit options in others.
const ZERO_CONFIG = '';
const EXPLICIT_SQLITE = `{ masterKey: 'sk-check-master', storage: sqliteStorage({ path: process.env.SPENDGUARD_DB }) }`;

const apps = [
  {
    name: 'cjs-express4',
    type: 'commonjs',
    deps: { express: '^4.21.0' },
    files: {
      'index.js':
        imports.cjs.express + imports.cjs.core + main({ framework: 'express', storage: ZERO_CONFIG }),
    },
  },
  {
    name: 'esm-express5',
    type: 'module',
    deps: { express: '^5.1.0' },
    files: {
      'index.js':
        imports.esm.express +
        imports.esm.core +
        `import { sqliteStorage } from '@spendguard/storage-sqlite';\n` +
        main({ framework: 'express', storage: EXPLICIT_SQLITE }),
    },
  },
  {
    name: 'esm-hono',
    type: 'module',
    deps: { hono: '^4.13.0', '@hono/node-server': '^2.0.0' },
    files: {
      'index.js': imports.esm.hono + imports.esm.core + main({ framework: 'hono', storage: ZERO_CONFIG }),
    },
  },
  {
    name: 'cjs-hono',
    type: 'commonjs',
    deps: { hono: '^4.13.0', '@hono/node-server': '^2.0.0' },
    files: {
      'index.js': imports.cjs.hono + imports.cjs.core + main({ framework: 'hono', storage: ZERO_CONFIG }),
    },
  },
  {
    // TypeScript compiling to CommonJS (`module: node16` in a CommonJS package): `import` becomes
    // `require`, so the types must come from the `require` condition (.d.cts).
    name: 'ts-node16-cjs',
    type: 'commonjs',
    deps: { express: '^5.1.0' },
    tsconfig: { module: 'node16', moduleResolution: 'node16' },
    files: {
      'index.ts':
        `import express from 'express';\nimport { spendGuard, type SpendGuardMiddleware } from '@spendguard/express';\n` +
        `import { calculateCost, type SpendGuard } from '@spendguard/core';\nimport { startSimulator } from '@spendguard/core/testing';\n` +
        `import { sqliteStorage } from '@spendguard/storage-sqlite';\n` +
        `const typed: (mw: SpendGuardMiddleware) => SpendGuard = (mw) => mw.guard;\nvoid typed;\n` +
        main({ framework: 'express', ts: true, storage: EXPLICIT_SQLITE }),
    },
  },
  {
    name: 'ts-node16-esm',
    type: 'module',
    deps: { hono: '^4.13.0', '@hono/node-server': '^2.0.0' },
    tsconfig: { module: 'node16', moduleResolution: 'node16' },
    files: {
      'index.ts':
        `import { Hono } from 'hono';\nimport { serve } from '@hono/node-server';\n` +
        `import { spendGuard, type SpendGuardEnv } from '@spendguard/hono';\n` +
        `import { calculateCost } from '@spendguard/core';\nimport { startSimulator } from '@spendguard/core/testing';\n` +
        `const typed = new Hono<SpendGuardEnv>().get('/', (c) => c.text(c.get('spendguard').requestId));\nvoid typed;\n` +
        main({ framework: 'hono', ts: true, storage: ZERO_CONFIG }),
    },
  },
  {
    name: 'ts-bundler',
    type: 'module',
    deps: { express: '^5.1.0' },
    tsconfig: { module: 'esnext', moduleResolution: 'bundler' },
    files: {
      'index.ts':
        `import express from 'express';\nimport { spendGuard } from '@spendguard/express';\n` +
        `import { calculateCost } from '@spendguard/core';\nimport { startSimulator } from '@spendguard/core/testing';\n` +
        `import { type SpendStorage, StorageConflictError } from '@spendguard/core/storage';\n` +
        `import { sqliteStorage, type SqliteStorageOptions } from '@spendguard/storage-sqlite';\n` +
        `const options: SqliteStorageOptions = { path: process.env.SPENDGUARD_DB };\nconst storage: SpendStorage = sqliteStorage(options);\n` +
        `void StorageConflictError;\n` +
        main({ framework: 'express', ts: true, storage: `{ masterKey: 'sk-check-master', storage }` }),
    },
  },
];

const TS_DEV = { typescript: '5.9.3', '@types/node': '^20.19.0', '@types/express': '^5.0.0' };

function writeApp(dir, app, dependencies) {
  mkdirSync(dir, { recursive: true });
  const manifest = { name: app.name, version: '1.0.0', private: true, type: app.type, dependencies };
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  for (const [name, text] of Object.entries(app.files)) writeFileSync(join(dir, name), text);
  if (app.tsconfig) {
    const tsconfig = {
      compilerOptions: {
        target: 'ES2022',
        lib: ['ES2023', 'DOM'],
        ...app.tsconfig,
        strict: true,
        esModuleInterop: true,
        skipLibCheck: false,
        types: ['node'],
        outDir: 'out',
      },
      files: ['index.ts'],
    };
    writeFileSync(join(dir, 'tsconfig.json'), `${JSON.stringify(tsconfig, null, 2)}\n`);
  }
}

/**
 * npm install in `dir`, as a user runs it. better-sqlite3 is the one dependency with an install script,
 * and compiling it (no prebuilt binary can be downloaded on these machines) is most of the install's
 * CPU: with `reuseNativeBuild`, scripts are skipped and the workspace's own build of the same version
 * is copied in when it loads in this Node, else it is built here (`npm rebuild`).
 * CHECK_PACKAGES_COMPILE=1 always runs the install scripts, exactly as a user's install does.
 */
async function npmInstall(dir, { reuseNativeBuild = false } = {}) {
  // Without the npm_* variables pnpm sets for its scripts (npm reads them as its own config and warns),
  // keeping the few that say how to reach the registry or build addons.
  const KEEP = /^npm_config_(nodedir|registry|cache|proxy|https_proxy|noproxy|cafile|strict_ssl)$/i;
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name) || KEEP.test(name)),
  );
  if (!env.npm_config_nodedir && existsSync('/usr/include/node/node.h')) env.npm_config_nodedir = '/usr';
  const reuse = reuseNativeBuild && !process.env.CHECK_PACKAGES_COMPILE;
  // No lockfile, no audit or funding requests: a fresh install as `npm install` makes it.
  const args = [
    'install',
    '--no-audit',
    '--no-fund',
    '--loglevel=warn',
    ...(reuse ? ['--ignore-scripts'] : []),
  ];
  const out = await sh('npm install', 'npm', args, { cwd: dir, env });
  const warnings = out.split('\n').filter((line) => /npm warn/i.test(line) && !/deprecated/i.test(line));
  if (reuse) {
    const installed = join(dir, 'node_modules/better-sqlite3');
    const { version } = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
    const built = join(
      root,
      `node_modules/.pnpm/better-sqlite3@${version}/node_modules/better-sqlite3/build`,
    );
    const binary = join(built, 'Release/better_sqlite3.node');
    const loads =
      existsSync(binary) &&
      (await run(process.execPath, ['-e', `require(${JSON.stringify(binary)})`]).then(
        () => true,
        () => false,
      ));
    if (loads) {
      mkdirSync(join(installed, 'build/Release'), { recursive: true });
      copyFileSync(binary, join(installed, 'build/Release/better_sqlite3.node'));
    } else {
      await sh('npm rebuild', 'npm', ['rebuild', 'better-sqlite3', '--loglevel=warn'], { cwd: dir, env });
    }
  }
  return warnings;
}

/** Starts the app as its own process; resolves with its RESULT line. */
function startApp(dir, entry, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [entry], { cwd: dir, env: { ...process.env, ...env } });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
    });
    child.stderr.on('data', (d) => {
      output += d;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      const result = /^RESULT (.*)$/m.exec(output);
      if (code === 0 && result) resolve(JSON.parse(result[1]));
      else reject(new Error(`exit code ${code}:\n${output.trim()}`));
    });
  });
}

// The SQLite apps are one npm workspace: better-sqlite3 is compiled once for all of them (about a
// minute here) while each app keeps its own package.json, module type and framework version.
const appsRoot = join(work, 'apps');
mkdirSync(appsRoot);
writeFileSync(
  join(appsRoot, 'package.json'),
  `${JSON.stringify({ name: 'spendguard-check-apps', private: true, workspaces: apps.map((a) => a.name), overrides, devDependencies: TS_DEV }, null, 2)}\n`,
);
for (const app of apps) {
  writeApp(join(appsRoot, app.name), app, {
    '@spendguard/core': file('@spendguard/core'),
    '@spendguard/storage-sqlite': file('@spendguard/storage-sqlite'),
    [app.deps.hono ? '@spendguard/hono' : '@spendguard/express']: file(
      app.deps.hono ? '@spendguard/hono' : '@spendguard/express',
    ),
    ...app.deps,
  });
}
// The Postgres-only app ----------------------------------------------------------------------------------

const pgApp = join(work, 'pg-only');
const PG_MAIN = `
import express from 'express';
import pg from 'pg';
import { spendGuard } from '@spendguard/express';
import { pgStorage } from '@spendguard/storage-pg';
import { calculateCost } from '@spendguard/core';
import { startSimulator } from '@spendguard/core/testing';
${SCENARIO}
const url = process.env.DATABASE_URL;
const schema = 'sg_check_' + process.pid;
const admin = new pg.Pool({ connectionString: url, max: 1 });
const simulator = await startSimulator();
const servers = [];
async function start(options) {
  const app = express();
  const mw = spendGuard(options);
  app.use(mw.admin);
  app.use('/v1', mw);${expressRoute(false)}
  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  servers.push({ server, mw });
  return { base: 'http://127.0.0.1:' + server.address().port, guard: mw.guard };
}
try {
  const onPg = await start({ masterKey: 'sk-check-master', storage: pgStorage({ connectionString: url, schema }) });
  const result = await scenario(onPg.base, onPg.guard, calculateCost);
  // No storage option: the SQLite default is not installed, and the answer says so.
  const noStorage = await start({ masterKey: 'sk-check-master', logger: { warn() {}, error() {} } });
  const refused = await fetch(noStorage.base + '/v1/chat/completions', {
    method: 'POST',
    headers: { authorization: 'Bearer sk-anything', 'content-type': 'application/json' },
    body: '{}',
  });
  const message = (await refused.json()).error.message;
  if (refused.status !== 503 || !message.includes('@spendguard/storage-sqlite'))
    throw new Error('without storage: ' + refused.status + ' ' + message);
  console.log('RESULT ' + JSON.stringify({ ...result, withoutStorage: message }));
} finally {
  for (const { server, mw } of servers) {
    server.close();
    await mw.guard.close().catch(() => {});
  }
  await simulator.close();
  await admin.query('DROP SCHEMA IF EXISTS ' + schema + ' CASCADE').catch(() => {});
  await admin.end();
}
`;
writeApp(
  pgApp,
  { name: 'pg-only', type: 'module', files: { 'index.js': PG_MAIN } },
  {
    '@spendguard/core': file('@spendguard/core'),
    '@spendguard/express': file('@spendguard/express'),
    '@spendguard/storage-pg': file('@spendguard/storage-pg'),
    express: '^5.1.0',
    pg: '^8.11.0',
  },
);
const pgManifest = JSON.parse(readFileSync(join(pgApp, 'package.json'), 'utf8'));
writeFileSync(join(pgApp, 'package.json'), `${JSON.stringify({ ...pgManifest, overrides }, null, 2)}\n`);

// Both installs at once: the SQLite one spends most of its time compiling, the other downloading.
const [installed, pgInstalled] = await Promise.all([
  check('npm install of the SQLite apps', async () => {
    const warnings = await npmInstall(appsRoot, { reuseNativeBuild: true });
    return `${seconds()}${warnings.length > 0 ? `; npm warned:\n${warnings.join('\n')}` : ''}`;
  }),
  check('npm install of the Postgres-only app', async () => {
    const warnings = await npmInstall(pgApp);
    return `${seconds()}${warnings.length > 0 ? `; npm warned:\n${warnings.join('\n')}` : ''}`;
  }),
]);

if (installed) {
  for (const app of apps) {
    const dir = join(appsRoot, app.name);
    let entry = 'index.js';
    if (app.tsconfig) {
      const tsc = join(appsRoot, 'node_modules/typescript/bin/tsc');
      const ok = await check(
        `${app.name}: tsc (${app.tsconfig.moduleResolution}, skipLibCheck false)`,
        async () => {
          await sh('tsc', process.execPath, [tsc, '-p', '.'], { cwd: dir });
        },
      );
      if (!ok) continue;
      entry = 'out/index.js';
    }
    await check(`${app.name}: guarded call and budget query`, async () => {
      const result = await startApp(dir, entry, {
        SPENDGUARD_DB: join(dir, 'spendguard.db'),
        SPENDGUARD_MASTER_KEY: 'sk-check-master',
      });
      return `cost $${result.cost}, $${result.remaining} left of $1`;
    });
  }
}

// --- 3. Postgres only ----------------------------------------------------------------------------------

if (pgInstalled) {
  await check('pg-only: no better-sqlite3 and no @spendguard/storage-sqlite in node_modules', async () => {
    const found =
      // The package at any depth (drizzle-orm's own better-sqlite3 folder is only its driver glue).
      (
        await sh('find', 'find', ['node_modules', '-type', 'd', '-path', '*node_modules/better-sqlite3'], {
          cwd: pgApp,
        })
      )
        .split('\n')
        .filter(Boolean);
    if (found.length > 0 || existsSync(join(pgApp, 'node_modules/@spendguard/storage-sqlite')))
      throw new Error(`found: ${found.join(', ') || '@spendguard/storage-sqlite'}`);
  });
  const url = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
  const { hostname, port } = new URL(url);
  const reachable = await new Promise((resolve) => {
    const socket = createConnection({ host: hostname, port: Number(port || 5432) });
    socket.setTimeout(3000);
    socket.once('connect', () => resolve(socket.destroy() || true));
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => resolve(socket.destroy() && false));
  });
  if (reachable || process.env.CI) {
    await check(
      'pg-only: guarded call and budget query on Postgres; no storage: 503 naming the package',
      async () => {
        const result = await startApp(pgApp, 'index.js', { DATABASE_URL: url });
        return `cost $${result.cost}, $${result.remaining} left of $1`;
      },
    );
    await check('pg-only: npx spendguard-pg-migrate (the published bin) migrates a schema', async () => {
      const schema = `sg_check_bin_${process.pid}`;
      const env = { ...process.env, DATABASE_URL: url };
      const bin = join(pgApp, 'node_modules/.bin/spendguard-pg-migrate');
      try {
        const out = await sh('spendguard-pg-migrate', bin, ['--schema', schema], { cwd: pgApp, env });
        if (!out.includes(`applied migration(s) 1,`)) throw new Error(out);
        return out.trim();
      } finally {
        const drop = `import pg from 'pg'; const c = new pg.Client(process.env.DATABASE_URL); await c.connect(); await c.query('DROP SCHEMA IF EXISTS ${schema} CASCADE'); await c.end();`;
        await run(process.execPath, ['--input-type=module', '-e', drop], { cwd: pgApp, env }).catch(() => {});
      }
    });
  } else {
    log(`notice: no Postgres answers at ${url}; the Postgres-only app was installed and checked but not run`);
  }
}

finish();

function finish() {
  if (process.env.KEEP_CHECK_DIR) log(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
  if (problems.length > 0) {
    log(`${problems.length} problem(s) in ${seconds()}: ${problems.join('; ')}`);
    process.exit(1);
  }
  log(`all good in ${seconds()}`);
  process.exit(0);
}
