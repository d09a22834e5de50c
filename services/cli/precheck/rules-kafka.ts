/**
 * Precheck rules on the services around the clusters: Kafka (reachable, transactions, the
 * direction topics' settings) and the schema registry. One function per rule.
 */
import type { PipelineConfig } from '../../../shared/config.js';
import { topicMaxMessageBytes } from '../../../shared/kafka.js';
import type { KafkaFacts, RegistryFacts } from './facts.js';
import type { AddFinding } from './findings.js';

/** kafka: the brokers answer (the other Kafka rules need them). */
export function checkKafka(_cfg: PipelineConfig, k: KafkaFacts, add: AddFinding): void {
  if (!k.reachable) {
    add({
      level: 'error',
      check: 'kafka',
      cluster: 'kafka',
      object: k.brokers,
      message: `Kafka at ${k.brokers} is unreachable: ${k.reason}; skipped: transaction support and topic settings`,
      fix: 'check kafka.brokers and that the brokers advertise addresses reachable from here',
    });
    return;
  }
  add({ level: 'ok', check: 'kafka', cluster: 'kafka', object: k.brokers, message: `Kafka at ${k.brokers} answers (${k.brokerCount} broker(s))` });
}

/** kafka_transactions: the transaction state log fits the cluster, so capture's transactional producer can start and commit. */
export function checkKafkaTransactions(_cfg: PipelineConfig, k: KafkaFacts, add: AddFinding): void {
  if (!k.reachable) return;
  const rf = k.transactionStateLogReplicationFactor;
  const isr = k.transactionStateLogMinIsr;
  if (rf !== undefined && rf > k.brokerCount) {
    add({
      level: 'error',
      check: 'kafka_transactions',
      cluster: 'kafka',
      object: 'transaction.state.log.replication.factor',
      message: `Kafka at ${k.brokers}: transaction.state.log.replication.factor is ${rf} but the cluster has ${k.brokerCount} broker(s); transactional producers (capture) cannot start`,
      fix: `set transaction.state.log.replication.factor (and transaction.state.log.min.isr) to at most ${k.brokerCount} in the broker config`,
    });
  } else if (isr !== undefined && isr > k.brokerCount) {
    add({
      level: 'error',
      check: 'kafka_transactions',
      cluster: 'kafka',
      object: 'transaction.state.log.min.isr',
      message: `Kafka at ${k.brokers}: transaction.state.log.min.isr is ${isr} but the cluster has ${k.brokerCount} broker(s); transactions cannot commit`,
      fix: `set transaction.state.log.min.isr to at most ${k.brokerCount} in the broker config`,
    });
  } else {
    add({
      level: 'ok',
      check: 'kafka_transactions',
      cluster: 'kafka',
      message: `Kafka at ${k.brokers}: brokers support transactions (Kafka ≥ 0.11)${rf === undefined ? '' : `, transaction log replication factor ${rf}`}`,
    });
  }
}

/** kafka_topics: the direction topics that exist keep one partition, every event (retention, no compaction) and records as large as topics.maxMessageBytes. */
export function checkKafkaTopics(cfg: PipelineConfig, k: KafkaFacts, add: AddFinding): void {
  if (!k.reachable) return;
  if (k.topicsError) {
    add({
      level: 'error',
      check: 'kafka_topics',
      cluster: 'kafka',
      message: `Kafka at ${k.brokers}: cannot read topics: ${k.topicsError}`,
      fix: 'grant the client Describe and DescribeConfigs on the topics',
    });
    return;
  }
  for (const t of k.topics) {
    const where = `topic ${t.name} on Kafka at ${k.brokers}`;
    if (!t.exists) {
      add({
        level: 'ok',
        check: 'kafka_topics',
        cluster: 'kafka',
        object: t.name,
        message: `${where} does not exist yet; setup creates it with ${cfg.topics.partitions} partition(s) and retention.ms=-1`,
      });
      continue;
    }
    let problems = 0;
    const warn = (level: 'error' | 'warning', object: string, message: string, fix: string): void => {
      problems++;
      add({ level, check: 'kafka_topics', cluster: 'kafka', object: t.name, message: `${where}: ${message}`, fix: `${fix} (${object})` });
    };
    if (t.partitions !== cfg.topics.partitions) {
      // One partition is what keeps source commit order across tables (§2); more breaks it.
      const level = cfg.topics.partitions === 1 && t.partitions > 1 ? 'error' : 'warning';
      warn(
        level,
        'partitions',
        `has ${t.partitions} partition(s) but topics.partitions is ${cfg.topics.partitions}${level === 'error' ? '; transactions would no longer be applied in source commit order' : ''}`,
        `recreate the topic with ${cfg.topics.partitions} partition(s), or set topics.partitions: ${t.partitions}`,
      );
    }
    if (t.replicationFactor < cfg.topics.replicationFactor) {
      warn(
        'warning',
        'replication factor',
        `has replication factor ${t.replicationFactor}, below topics.replicationFactor ${cfg.topics.replicationFactor}`,
        'reassign partitions to more replicas (kafka-reassign-partitions)',
      );
    }
    const policies = t.cleanupPolicy.split(',').map((p) => p.trim());
    if (policies.includes('compact')) {
      warn(
        'warning',
        'cleanup.policy',
        `cleanup.policy is ${t.cleanupPolicy}: compaction keeps only the last event per row, so replaying the topic loses transaction boundaries and intermediate changes`,
        `kafka-configs --alter --entity-type topics --entity-name ${t.name} --add-config cleanup.policy=delete`,
      );
    }
    if (policies.includes('delete') && t.retentionMs !== -1) {
      warn(
        'warning',
        'retention.ms',
        `retention.ms is ${t.retentionMs} (${(t.retentionMs / 3_600_000).toFixed(1)} h): events older than that are deleted, and replay or rebuild of a destination from the topic needs all of them`,
        `kafka-configs --alter --entity-type topics --entity-name ${t.name} --add-config retention.ms=-1`,
      );
    }
    if (policies.includes('delete') && t.retentionBytes !== -1) {
      warn(
        'warning',
        'retention.bytes',
        `retention.bytes is ${t.retentionBytes}: old events are deleted past that size, and replay needs all of them`,
        `kafka-configs --alter --entity-type topics --entity-name ${t.name} --add-config retention.bytes=-1`,
      );
    }
    const needBytes = topicMaxMessageBytes(cfg);
    if (t.maxMessageBytes !== undefined && t.maxMessageBytes < needBytes) {
      warn(
        'error',
        'max.message.bytes',
        `max.message.bytes is ${t.maxMessageBytes}, below the ${needBytes} that topics.maxMessageBytes (${cfg.topics.maxMessageBytes}) needs: a row change larger than about ${t.maxMessageBytes} bytes would be refused by Kafka`,
        `run pgbridge setup (it raises the topic's limit), or kafka-configs --alter --entity-type topics --entity-name ${t.name} --add-config max.message.bytes=${needBytes}`,
      );
    }
    if (problems === 0)
      add({
        level: 'ok',
        check: 'kafka_topics',
        cluster: 'kafka',
        object: t.name,
        message: `${where}: ${t.partitions} partition(s), cleanup.policy=${t.cleanupPolicy}, retention.ms=${t.retentionMs}${t.maxMessageBytes === undefined ? '' : `, max.message.bytes=${t.maxMessageBytes}`}`,
      });
  }
}

/** registry: the schema registry answers GET <url>/subjects with 200. */
export function checkRegistry(r: RegistryFacts, add: AddFinding): void {
  if (r.status === 200) {
    add({ level: 'ok', check: 'registry', cluster: 'registry', object: r.url, message: `schema registry: GET ${r.url} answered 200` });
    return;
  }
  add({
    level: 'error',
    check: 'registry',
    cluster: 'registry',
    object: r.url,
    message:
      r.status === undefined
        ? `schema registry: GET ${r.url} failed: ${r.reason ?? 'no answer'}`
        : `schema registry: GET ${r.url} answered HTTP ${r.status}, not 200`,
    fix: 'check registry.url: the base URL of a Confluent-compatible API (for Apicurio …/apis/ccompat/v7) reachable from here',
  });
}
