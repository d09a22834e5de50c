/** Reads a direction topic (read_committed) and decodes every record through the registry. */
import { KafkaClient, followTopic, kafkaConnection } from '../../shared/kafka.js';
import { SchemaStore, type DecodedRecord } from '../../shared/registry.js';
import type { PipelineConfig } from '../../shared/config.js';

export interface ReadRecord extends DecodedRecord {
  readonly offset: string;
  readonly key: Buffer | null;
  readonly headers: Record<string, string>;
}

/** Reads from the start until `until(records)` holds, then returns everything read. */
export async function readTopic(cfg: PipelineConfig, topic: string, until: (records: ReadRecord[]) => boolean, timeoutMs = 60_000): Promise<ReadRecord[]> {
  const store = new SchemaStore(cfg.registry);
  const out: ReadRecord[] = [];
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const f = followTopic(new KafkaClient(kafkaConnection(cfg, 'test-reader')), topic, { readCommitted: true }, async (messages) => {
    if (out.length && until(out)) return;
    for (const m of messages) {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(m.headers)) headers[k] = v.toString();
      out.push({ ...(await store.decode(m.value)), offset: String(m.offset), key: m.key, headers });
      if (until(out)) {
        done();
        return;
      }
    }
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      finished,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out reading ${topic}: ${out.length} records so far`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    await f.stop();
  }
  return out;
}

export function changes(records: ReadRecord[]): Record<string, any>[] {
  return records.filter((r) => r.recordName.endsWith('.Envelope')).map((r) => r.value as Record<string, any>);
}
