/** Reads a direction topic (read_committed) and decodes every record through the registry. */
import { Kafka, logLevel } from 'kafkajs';
import { SchemaStore, type DecodedRecord } from '../../shared/registry.js';
import type { PipelineConfig } from '../../shared/config.js';

export interface ReadRecord extends DecodedRecord {
  readonly offset: string;
  readonly key: Buffer | null;
  readonly headers: Record<string, string>;
}

/** Reads from the start until `until(records)` holds, then returns everything read. */
export async function readTopic(cfg: PipelineConfig, topic: string, until: (records: ReadRecord[]) => boolean, timeoutMs = 60_000): Promise<ReadRecord[]> {
  const kafka = new Kafka({ brokers: [...cfg.kafka.brokers], logLevel: logLevel.NOTHING, clientId: 'test-reader' });
  const store = new SchemaStore(cfg.registry);
  const consumer = kafka.consumer({ groupId: `test-reader-${topic}-${Date.now()}`, readUncommitted: false });
  const out: ReadRecord[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out reading ${topic}: ${out.length} records so far`)), timeoutMs);
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ message }) => {
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
            out.push({ ...(await store.decode(message.value)), offset: message.offset, key: message.key, headers });
            if (until(out)) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return out;
}

export function changes(records: ReadRecord[]): Record<string, any>[] {
  return records.filter((r) => r.recordName.endsWith('.Envelope')).map((r) => r.value as Record<string, any>);
}
