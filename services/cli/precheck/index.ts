/**
 * `pgbridge precheck`: what DTS checks before a task starts, for both clusters, Kafka and the
 * registry. Three stages, each in its own files: gather (gather.ts, gather-services.ts:
 * read-only queries, never throws: an unreachable system becomes a fact) → evaluate
 * (evaluate.ts and the rules-*.ts it runs: pure, one function per rule) → format
 * (format.ts). Every finding is reported, never only the first; the caller decides what an
 * error means (the CLI exits 1).
 */
import type { PipelineConfig } from '../../../shared/config.js';
import { evaluateFacts } from './evaluate.js';
import type { Finding, PrecheckOptions } from './findings.js';
import { gatherFacts } from './gather.js';

export { evaluateFacts } from './evaluate.js';
export type * from './facts.js';
export { CHECKS, type CheckName, type Finding, type FindingLevel, type PrecheckOptions } from './findings.js';
export { formatFindings } from './format.js';
export { gatherFacts } from './gather.js';
export { sequencesOverlap } from './sequences.js';

/** Runs every check and returns every finding (errors, warnings and ok lines). Never throws for an unreachable system. */
export async function precheck(cfg: PipelineConfig, opts: PrecheckOptions = {}): Promise<Finding[]> {
  return evaluateFacts(cfg, await gatherFacts(cfg, opts), opts);
}
