/**
 * Imported first by every entry point (capture, apply, the CLI): turns on Node's on-disk
 * compile cache, so that a process start compiles the CommonJS dependencies (pg, avsc, pino,
 * the registry client and theirs) from cached code instead of from source. The cache sits in
 * the system's temp folder unless NODE_COMPILE_CACHE names another; a cache that cannot be
 * written is skipped by Node, never an error.
 */
import { enableCompileCache } from 'node:module';

enableCompileCache?.();
