/**
 * Precheck facts of the services around the clusters: Kafka (brokers, transaction log
 * settings, the direction topics' settings) and the schema registry. Bounded by a timeout;
 * an unreachable service is a fact, never an exception.
 */
import { connect as tcpConnect } from 'node:net';
import type { PipelineConfig, RegistryConfig } from '../../../shared/config.js';
import { errorMessage } from '../../../shared/errors.js';
import { kafkaClient } from '../../../shared/kafka.js';
import type { Logger } from '../../../shared/log.js';
import { registryGet } from '../../../shared/registry.js';
import type { KafkaFacts, RegistryFacts, TopicFacts } from './facts.js';

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Resolves null when host:port accepts a TCP connection, else the reason. */
function probeTcp(hostPort: string, timeoutMs: number): Promise<string | null> {
  const i = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(hostPort.slice(i + 1));
  return new Promise((resolve) => {
    const sock = tcpConnect({ host, port });
    const done = (reason: string | null): void => {
      sock.destroy();
      resolve(reason);
    };
    sock.setTimeout(timeoutMs, () => done(`no TCP connection within ${timeoutMs} ms`));
    sock.once('connect', () => done(null));
    sock.once('error', (err) => done(errorMessage(err)));
  });
}

export async function gatherKafka(cfg: PipelineConfig, log: Logger, timeoutMs: number): Promise<KafkaFacts> {
  const brokers = cfg.kafka.brokers.join(',');
  // A plain TCP probe first: it names the socket error (the client would only time out here)
  // and spares its reconnect attempts when no broker listens at all.
  const probes = await Promise.all(cfg.kafka.brokers.map((b) => probeTcp(b, timeoutMs)));
  if (probes.every((p) => p !== null)) return { reachable: false, brokers, reason: probes.map((p, i) => `${cfg.kafka.brokers[i]}: ${p}`).join('; ') };
  const admin = kafkaClient(cfg, 'precheck', log).admin({ retries: 0 });
  try {
    let brokerIds: number[];
    try {
      brokerIds = await withTimeout(admin.brokers(), timeoutMs, 'metadata');
    } catch (err) {
      return { reachable: false, brokers, reason: errorMessage(err) };
    }
    let txRf: number | undefined;
    let txMinIsr: number | undefined;
    const first = brokerIds[0];
    if (first !== undefined) {
      try {
        const r = await withTimeout(
          admin.describeConfigs('broker', [String(first)], ['transaction.state.log.replication.factor', 'transaction.state.log.min.isr']),
          timeoutMs,
          'describeConfigs',
        );
        const c = r.get(String(first));
        const rf = c?.get('transaction.state.log.replication.factor');
        const isr = c?.get('transaction.state.log.min.isr');
        if (rf != null) txRf = Number(rf);
        if (isr != null) txMinIsr = Number(isr);
      } catch {
        // Not every broker lets a client read its config (ACLs); the check then says nothing.
      }
    }
    const names = cfg.directions.map((d) => d.topic);
    let topics: TopicFacts[] = [];
    let topicsError: string | undefined;
    try {
      const existing = new Set(await withTimeout(admin.listTopics(), timeoutMs, 'listTopics'));
      const present = names.filter((t) => existing.has(t));
      const meta = new Map<string, { partition: number; replicas: number }[]>();
      for (const t of present) meta.set(t, await withTimeout(admin.topicPartitions(t), timeoutMs, 'metadata'));
      const conf = present.length
        ? await withTimeout(
            admin.describeConfigs('topic', present, ['cleanup.policy', 'retention.ms', 'retention.bytes', 'max.message.bytes']),
            timeoutMs,
            'describeConfigs',
          )
        : new Map<string, Map<string, string | null>>();
      topics = names.map((name): TopicFacts => {
        if (!existing.has(name)) return { name, exists: false };
        const m = meta.get(name) ?? [];
        const entries = conf.get(name) ?? new Map<string, string | null>();
        return {
          name,
          exists: true,
          partitions: m.length,
          replicationFactor: m[0]?.replicas ?? 0,
          cleanupPolicy: entries.get('cleanup.policy') ?? 'delete',
          retentionMs: Number(entries.get('retention.ms') ?? '604800000'),
          retentionBytes: Number(entries.get('retention.bytes') ?? '-1'),
          ...(entries.get('max.message.bytes') ? { maxMessageBytes: Number(entries.get('max.message.bytes')) } : {}),
        };
      });
    } catch (err) {
      topicsError = errorMessage(err);
    }
    return {
      reachable: true,
      brokers,
      brokerCount: brokerIds.length,
      ...(txRf === undefined ? {} : { transactionStateLogReplicationFactor: txRf }),
      ...(txMinIsr === undefined ? {} : { transactionStateLogMinIsr: txMinIsr }),
      topics,
      ...(topicsError === undefined ? {} : { topicsError }),
    };
  } finally {
    await admin.close();
  }
}

export async function gatherRegistry(registry: RegistryConfig, timeoutMs: number): Promise<RegistryFacts> {
  // registry.url never holds credentials (config moves them to username/password).
  const subjects = `${registry.url}/subjects`;
  try {
    return { url: subjects, status: await registryGet(registry, '/subjects', timeoutMs) };
  } catch (err) {
    return { url: subjects, reason: errorMessage(err) };
  }
}
