// After settle: what no call settles itself. Reservations left past their TTL are charged at their
// estimate (on a timer), and so are those of processes whose heartbeat stopped.
import type { GuardLogger } from '../config.js';
import { SpendGuardError } from '../errors.js';
import type { SpendStorage } from '../storage/storage-contract.js';
import type { StorageGate } from '../storage/storage-gate.js';

export interface SweeperDeps {
  options: { reservationSweepMs: number; heartbeatGraceMs: number };
  gate: Pick<StorageGate, 'call'>;
  logger: GuardLogger;
  now(): Date;
  /** This process's id in the store's heartbeats. */
  processId: string;
  /** Logs storage failures, at most one line every 5 s during an outage. */
  logStorageError(error: SpendGuardError): void;
}

export class ReservationSweeper {
  private sweepTimer: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;

  constructor(private readonly deps: SweeperDeps) {}

  /** Charges unsettled reservations past their TTL at their estimate (also run on a timer). */
  async sweepExpiredReservations(): Promise<number> {
    const expired = await this.deps.gate.call('reservation sweep', (s) =>
      s.expireReservations(this.deps.now()),
    );
    if (expired > 0) {
      this.deps.logger.warn(
        `charged ${expired} reservations left unsettled past their TTL at their estimates`,
      );
    }
    return expired;
  }

  /** Heartbeats matter where other processes share the store (an in-memory one dies with us). */
  beatsHeartbeat(storage: SpendStorage): boolean {
    return this.deps.options.heartbeatGraceMs > 0 && storage.capabilities.sharedAcrossProcesses;
  }

  /**
   * Beats every quarter of `heartbeatGraceMs`, then charges what processes silent for longer left
   * open. Each beat is written before the sweep reads the others', so this process is never stale to
   * itself; a tick starts only once the previous one is done. A process sweeps only once it has itself
   * beaten without a failure for a whole grace period: after an outage of the store every live process
   * has had that long to beat again before anyone takes its silence for a death.
   */
  startHeartbeat(storage: SpendStorage): void {
    if (!this.beatsHeartbeat(storage) || this.heartbeatTimer) return;
    const grace = this.deps.options.heartbeatGraceMs;
    let beatingSince: number | null = Date.now(); // the first beat was written as the store opened
    const tick = async () => {
      try {
        const at = new Date();
        try {
          await this.deps.gate.call('heartbeat', (s) => s.heartbeat(this.deps.processId, at));
        } catch (error) {
          beatingSince = null;
          throw error;
        }
        beatingSince ??= at.getTime();
        if (at.getTime() - beatingSince >= grace) {
          await this.settleDeadProcesses(new Date(at.getTime() - grace));
        }
      } catch (error) {
        if (error instanceof SpendGuardError && error.code === 'STORAGE_UNAVAILABLE')
          this.deps.logStorageError(error);
        else this.deps.logger.error('heartbeat or dead-process sweep failed', error);
      }
      if (this.heartbeatTimer) this.heartbeatTimer = schedule();
    };
    const schedule = () => {
      const timer = setTimeout(() => void tick(), Math.max(250, Math.floor(grace / 4)));
      timer.unref();
      return timer;
    };
    this.heartbeatTimer = schedule();
  }

  /**
   * Charges, at their estimate, the open reservations of every process that last beat at or before
   * `staleBefore` (the heartbeat timer runs this; a test or an operator may too).
   */
  async settleDeadProcesses(staleBefore: Date): Promise<number> {
    const settled = await this.deps.gate.call('dead-process sweep', (s) =>
      s.settleDeadProcesses(staleBefore, this.deps.now()),
    );
    if (settled > 0) {
      this.deps.logger.warn(
        `charged ${settled} reservations of processes whose heartbeat stopped at their estimates`,
      );
    }
    return settled;
  }

  startSweep(): void {
    const every = this.deps.options.reservationSweepMs;
    if (every === 0 || this.sweepTimer) return;
    this.sweepTimer = setInterval(() => {
      this.sweepExpiredReservations().catch(() => {}); // a failure is counted and logged by the gate
    }, every);
    this.sweepTimer.unref();
  }

  /** Stops both timers; no more beats: what this process still holds is charged by the others. */
  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }
}
