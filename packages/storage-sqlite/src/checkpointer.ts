import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/**
 * The worker's code, CommonJS in a string (so it needs no file of its own in source or build): its own
 * connection to the file, checkpointing the WAL into the database every `intervalMs`, PASSIVE (it never
 * waits for, nor blocks, the writers). A checkpoint copies pages and fsyncs the database file; done on
 * the event loop's thread (SQLite's automatic checkpoint, every 1,000 WAL pages) that fsync stalls every
 * request in flight.
 */
const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path);
db.pragma('busy_timeout = ' + workerData.busyTimeoutMs);
let failed = false;
const checkpoint = () => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
    failed = false;
  } catch (error) {
    if (!failed) parentPort.postMessage({ error: String(error && error.message || error) });
    failed = true;
  }
};
const timer = setInterval(checkpoint, workerData.intervalMs);
parentPort.on('message', () => {
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

/** A WAL checkpointer on its own thread; `stop()` ends it (its connection closed) before resolving. */
export class BackgroundCheckpointer {
  readonly #worker: Worker;
  readonly #exited: Promise<void>;

  constructor(path: string, intervalMs: number, busyTimeoutMs: number, onError: (message: string) => void) {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    this.#worker = new Worker(WORKER, {
      eval: true,
      workerData: { path, intervalMs, busyTimeoutMs, driver },
      // The checkpointer needs none of the loaders the app may run with (tsx in development).
      execArgv: [],
    });
    this.#worker.unref(); // never what keeps a process alive
    this.#worker.on('message', (m: { error?: string }) => m.error && onError(m.error));
    this.#worker.on('error', (e) => onError(e.message));
    this.#exited = new Promise((resolve) => this.#worker.once('exit', () => resolve()));
  }

  async stop(): Promise<void> {
    this.#worker.ref(); // the process waits for its connection to close
    this.#worker.postMessage('stop');
    await this.#exited;
  }
}
