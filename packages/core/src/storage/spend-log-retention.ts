/**
 * `spendLogRetentionDays`: spend logs older than that are deleted, at start and then every hour (in
 * batches, so a large backlog never holds a long write). The daily rollups stay, so reports and the
 * dashboard's totals do not change; only the per-call rows go.
 */
import type { GuardLogger } from '../guard-logger.js';
import type { SpendStorage } from './storage-contract.js';

const DAY_MS = 86_400_000;
const EVERY_MS = 3_600_000;
const BATCH = 10_000;

export interface RetentionHost {
  now(): Date;
  read<T>(what: string, fn: (storage: SpendStorage) => Promise<T>): Promise<T>;
  readonly logger: GuardLogger;
}

export class SpendLogRetention {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number> | null = null;

  constructor(
    private readonly host: RetentionHost,
    private readonly days: number | null,
  ) {}

  /** Prunes now, then every hour (no-op without `spendLogRetentionDays`). */
  start(): void {
    if (this.days === null || this.timer) return;
    const run = () => {
      this.prune().catch((error: unknown) =>
        this.host.logger.error('spend-log retention: prune failed', error),
      );
    };
    this.timer = setInterval(run, EVERY_MS);
    this.timer.unref();
    run();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Deletes the logs older than the retention (on the guard's clock); returns how many. */
  prune(): Promise<number> {
    if (this.days === null) return Promise.resolve(0);
    this.running ??= this.pruneAll(this.days).finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async pruneAll(days: number): Promise<number> {
    const before = new Date(this.host.now().getTime() - days * DAY_MS);
    let total = 0;
    for (;;) {
      const n = await this.host.read('spend-log retention', (s) => s.pruneSpendLogs(before, BATCH));
      total += n;
      if (n < BATCH) return total;
    }
  }
}
