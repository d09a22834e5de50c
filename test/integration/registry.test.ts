/**
 * The schema registry client against the real registry (Apicurio's Confluent API): a subject
 * left at the registry's default compatibility level (a process killed between registering it
 * and setting its level, as an initial sync under SIGKILL did) still takes the same schema
 * again and a new version of it.
 */
import { describe, expect, it } from 'vitest';
import { SchemaStore } from '../../shared/registry.js';
import { testConfig, uniqueName } from '../support/pipeline.js';

describe('schema registry', () => {
  it('registers into a subject whose compatibility level the client did not set', async () => {
    const cfg = testConfig(uniqueName('preg'), 'public');
    const subject = uniqueName('subject');
    const v1 = { type: 'record', name: 'R', fields: [{ name: 'a', type: 'int' }] };
    const v2 = { ...v1, fields: [...v1.fields, { name: 'b', type: ['null', 'string'], default: null }] };
    // As a killed process leaves it: the schema registered, the level never set.
    const r = await fetch(`${cfg.registry.url}/subjects/${subject}/versions`, {
      method: 'POST',
      headers: { 'content-type': 'application/vnd.schemaregistry.v1+json' },
      body: JSON.stringify({ schema: JSON.stringify(v1) }),
    });
    expect(r.status).toBe(200);
    const first = ((await r.json()) as { id: number }).id;
    const level = await fetch(`${cfg.registry.url}/config/${subject}`);
    expect(level.status, 'the registry reports a level of its own for the subject').toBe(200);

    const store = new SchemaStore(cfg.registry);
    expect(await store.register(subject, v1)).toBe(first);
    const second = await new SchemaStore(cfg.registry).register(subject, v2);
    expect(second).not.toBe(first);
    expect((await store.schema(second)).name).toBe('R');
  });
});
