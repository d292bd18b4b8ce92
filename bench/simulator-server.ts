// The simulated provider in its own process, shared by both benchmarked apps.
import { startSimulator } from '@spendguard/core/testing';

const sim = await startSimulator({ latencyMs: Number(process.env.SIM_LATENCY_MS ?? 0) });
process.send?.({ url: sim.url });
