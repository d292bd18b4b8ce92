/**
 * `@spendguard/core/testing`: a simulated LLM provider that speaks the real wire formats, for an app's
 * tests and demos. It loads without a test runner; the storage conformance suite, which needs vitest,
 * is `@spendguard/core/conformance`.
 */
export type { SimulatedUsage, Simulator, SimulatorBilling, SimulatorOptions } from './simulator.js';
export { startSimulator } from './simulator.js';
