export { memoryRawReader } from './memory-raw-reader.js';
export type { SimulatedUsage, Simulator, SimulatorBilling, SimulatorOptions } from './simulator.js';
export { startSimulator } from './simulator.js';
export type { ConformanceOptions, RawStorageReader } from './storage-conformance.js';
export { runStorageConformance, spendLogFixture } from './storage-conformance.js';
