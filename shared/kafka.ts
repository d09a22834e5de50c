/**
 * kafkajs behind the few calls pgbridge makes, so its types stay in this file and the
 * services' adapters (kafkajs' last release is from 2023; keep it replaceable).
 */
import { Kafka, logLevel, type Admin, type ITopicConfig, type LogEntry } from 'kafkajs';
import type { Logger } from './log.js';
import type { PipelineConfig } from './config.js';

export type { Admin };

function kafkaLogCreator(log: Logger) {
  return () =>
    ({ level, log: entry }: LogEntry) => {
      const { message, ...rest } = entry;
      const fields = { kafkajs: rest };
      // Expected right after a transaction commit; kafkajs retries it at once (see KafkaPublisher).
      if (/concurrent operation on the same transaction|Limiting retries for the idempotent producer/.test(`${message} ${String((rest as { error?: unknown }).error ?? '')}`)) {
        log.debug(fields, `kafkajs: ${message}`);
        return;
      }
      if (level === logLevel.ERROR) log.warn(fields, `kafkajs: ${message}`);
      else if (level === logLevel.WARN) log.warn(fields, `kafkajs: ${message}`);
      else log.debug(fields, `kafkajs: ${message}`);
    };
}

export function kafkaClient(cfg: PipelineConfig, clientId: string, log: Logger): Kafka {
  process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
  return new Kafka({
    clientId: `${cfg.kafka.clientId}-${clientId}`,
    brokers: [...cfg.kafka.brokers],
    connectionTimeout: cfg.kafka.connectionTimeoutMs,
    requestTimeout: cfg.kafka.requestTimeoutMs,
    logLevel: logLevel.WARN,
    logCreator: kafkaLogCreator(log),
    retry: { retries: 8, initialRetryTime: 300, maxRetryTime: 10_000 },
  });
}

/** Creates the direction topics when missing (idempotent). Returns the topics created. */
export async function ensureTopics(admin: Admin, cfg: PipelineConfig, extra: readonly string[] = []): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const wanted: ITopicConfig[] = [...cfg.directions.map((d) => d.topic), ...extra]
    .filter((t) => !existing.has(t))
    .map((topic) => ({
      topic,
      numPartitions: cfg.topics.partitions,
      replicationFactor: cfg.topics.replicationFactor,
      // The topic is the replayable log: keep everything unless the operator says otherwise.
      configEntries: [{ name: 'retention.ms', value: '-1' }],
    }));
  if (wanted.length) await admin.createTopics({ topics: wanted, waitForLeaders: true });
  return wanted.map((t) => t.topic);
}

/**
 * Records a read_committed consumer still has to read in a partition of a direction topic,
 * from the stored next offset to the partition's end offset. Capture writes only in Kafka
 * transactions, so the last offset before the end is a commit marker that no consumer
 * receives: a caught-up apply stores end - 1, and that counts as 0.
 */
export function recordsBehind(end: bigint, next: bigint): number {
  return Math.max(0, Number(end - next) - 1);
}

