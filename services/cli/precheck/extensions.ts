/**
 * Precheck rule `extensions`: the extensions the selected objects use on the forward source
 * (schema-objects.ts decides which), against the forward destination. The schema step of
 * `sync` creates the missing ones; this rule says beforehand which it cannot create, and how
 * to fix that. Gathering is read-only and never throws (a failure becomes a fact).
 */
import type { PipelineConfig } from '../../../shared/config.js';
import { errorMessage } from '../../../shared/errors.js';
import { withClient } from '../../../shared/pg.js';
import {
  classifyExtensions,
  destinationExtensions,
  extensionRole,
  planSchema,
  type DestinationExtension,
  type NeededExtension,
} from '../../snapshot/schema-objects.js';
import type { Finding } from './findings.js';
import { selectedTables } from '../setup.js';

export interface ExtensionFacts {
  readonly needed: readonly NeededExtension[];
  readonly destination: readonly DestinationExtension[];
  readonly role: { readonly name: string; readonly superuser: boolean; readonly createOnDatabase: boolean };
  /** Set when either cluster could not be read (the rule then says so and nothing else). */
  readonly error?: string;
}

export async function gatherExtensions(cfg: PipelineConfig): Promise<ExtensionFacts> {
  const fwd = cfg.directions[0];
  try {
    const needed = await withClient(
      cfg.clusters[fwd.from]!,
      'pgbridge-precheck',
      async (c) => (await planSchema(c, cfg, await selectedTables(c, cfg))).extensions,
    );
    return await withClient(cfg.clusters[fwd.to]!, 'pgbridge-precheck', async (c) => ({
      needed,
      destination: await destinationExtensions(
        c,
        needed.map((e) => e.name),
      ),
      role: await extensionRole(c),
    }));
  } catch (err) {
    return { needed: [], destination: [], role: { name: '', superuser: false, createOnDatabase: false }, error: errorMessage(err) };
  }
}

/** Pure: one finding per extension that the destination lacks and sync cannot create, else one ok line. */
export function evaluateExtensions(cfg: PipelineConfig, f: ExtensionFacts, add: (f: Finding) => void): void {
  const to = cfg.directions[0].to;
  if (f.error !== undefined) {
    add({ level: 'warning', check: 'extensions', cluster: to, message: `extensions the selected objects use were not checked: ${f.error}` });
    return;
  }
  const { create, present, problems } = classifyExtensions(f.needed, f.destination, f.role, to);
  for (const p of problems) add({ level: 'error', check: 'extensions', cluster: to, object: p.extension, message: p.message, fix: p.fix });
  if (problems.length === 0) {
    const parts = [
      present.length ? `on ${to} already: ${present.map((e) => e.name).join(', ')}` : '',
      create.length ? `created on ${to} by the schema step of sync: ${create.map((e) => `${e.name} (schema ${e.schema})`).join(', ')}` : '',
    ].filter(Boolean);
    add({
      level: 'ok',
      check: 'extensions',
      cluster: to,
      message: f.needed.length ? `extensions the selected objects use: ${parts.join('; ')}` : 'the selected objects use no extension',
    });
  }
}
