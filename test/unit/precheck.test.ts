/**
 * precheck's evaluation over hand-made facts: the findings the real stack cannot produce
 * (it is configured correctly and shared, so no ALTER SYSTEM there) and the sequence math.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig, type PipelineConfig, type PipelineConfigInput } from '../../shared/config.js';
import {
  evaluateFacts,
  formatFindings,
  sequencesOverlap,
  type Finding,
  type KafkaFacts,
  type PrecheckFacts,
  type ReachableClusterFacts,
  type SequenceFacts,
  type TableFacts,
} from '../../services/cli/precheck/index.js';

function config(over: Partial<PipelineConfigInput> = {}): PipelineConfig {
  return parseConfig({
    pipeline: 'p',
    clusters: { a: { host: 'ha', port: 5001 }, b: { host: 'hb', port: 5002 } },
    // Loopback Kafka and an encrypted registry: the other tests look at one problem each.
    kafka: { brokers: ['127.0.0.1:9092'] },
    registry: { url: 'https://r:8081' },
    selection: { schemas: ['app'] },
    ...over,
  });
}

function table(over: Partial<TableFacts> = {}): TableFacts {
  return {
    schema: 'app',
    table: 't',
    hasPrimaryKey: true,
    replicaIdentity: 'default',
    replicaIdentityIndexOk: true,
    owned: true,
    privileges: { select: true, insert: true, update: true, delete: true, truncate: true },
    columns: [{ name: 'id', type: 'integer' }],
    hasRows: false,
    sequences: [],
    ...over,
  };
}

function cluster(name: 'a' | 'b', over: Partial<ReachableClusterFacts> = {}): ReachableClusterFacts {
  return {
    reachable: true,
    name,
    host: name === 'a' ? 'ha' : 'hb',
    port: name === 'a' ? 5001 : 5002,
    database: 'postgres',
    user: 'sync',
    serverVersion: '15.20',
    serverVersionNum: 150020,
    walLevel: 'logical',
    trackCommitTimestamp: true,
    maxReplicationSlots: 10,
    maxWalSenders: 10,
    walSenderTimeoutMs: 60_000,
    slotsInUse: 0,
    sendersInUse: 0,
    ownSlot: null,
    role: { superuser: true, replication: true, originSessionSetup: true, originXactSetup: true, setSessionReplicationRole: true, createOnDatabase: true },
    cdcSchemaExists: false,
    publicationExists: false,
    ddlTriggerExists: true,
    schemas: [{ name: 'app', usage: true }],
    tables: [table()],
    ...over,
  };
}

const kafkaOk: KafkaFacts = {
  reachable: true,
  brokers: 'k:9092',
  brokerCount: 1,
  transactionStateLogReplicationFactor: 1,
  transactionStateLogMinIsr: 1,
  topics: [],
};

function facts(over: { a?: Partial<ReachableClusterFacts>; b?: Partial<ReachableClusterFacts>; kafka?: KafkaFacts } = {}): PrecheckFacts {
  return {
    clusters: { a: cluster('a', over.a), b: cluster('b', over.b) },
    kafka: over.kafka ?? kafkaOk,
    registry: { url: 'http://r:8081/subjects', status: 200 },
  };
}

const problems = (fs: Finding[]): Finding[] => fs.filter((f) => f.level !== 'ok');

describe('precheck evaluation', () => {
  it('correct facts give no error and no warning', () => {
    expect(problems(evaluateFacts(config(), facts()))).toEqual([]);
  });

  it('wal_level other than logical is an error with ALTER SYSTEM and restart', () => {
    const fs = problems(evaluateFacts(config(), facts({ b: { walLevel: 'replica' } })));
    expect(fs).toHaveLength(1);
    expect(fs[0]).toMatchObject({ level: 'error', check: 'wal_level', cluster: 'b', object: 'wal_level' });
    expect(fs[0]!.message).toContain('cluster b (hb:5002)');
    expect(fs[0]!.fix).toContain('ALTER SYSTEM SET wal_level = logical');
    expect(fs[0]!.fix).toContain('restart');
  });

  it('no free replication slot is an error, unless our slot already exists', () => {
    const full = problems(evaluateFacts(config(), facts({ a: { maxReplicationSlots: 4, slotsInUse: 4 } })));
    expect(full).toHaveLength(1);
    expect(full[0]).toMatchObject({ level: 'error', check: 'replication_slots', cluster: 'a', object: 'max_replication_slots' });
    expect(full[0]!.message).toContain('cdc_p_a');
    expect(full[0]!.fix).toContain('max_replication_slots = 5');
    expect(problems(evaluateFacts(config(), facts({ a: { maxReplicationSlots: 4, slotsInUse: 4, ownSlot: { active: false } } })))).toEqual([]);
  });

  it('no free wal sender is an error, unless our slot is active (its sender is already counted)', () => {
    const full = problems(evaluateFacts(config(), facts({ b: { maxWalSenders: 2, sendersInUse: 2 } })));
    expect(full).toHaveLength(1);
    expect(full[0]).toMatchObject({ level: 'error', check: 'wal_senders', cluster: 'b' });
    expect(full[0]!.fix).toContain('max_wal_senders = 3');
    expect(problems(evaluateFacts(config(), facts({ b: { maxWalSenders: 2, sendersInUse: 2, ownSlot: { active: true } } })))).toEqual([]);
    expect(problems(evaluateFacts(config(), facts({ b: { maxWalSenders: 2, sendersInUse: 2, ownSlot: { active: false } } })))[0]?.check).toBe('wal_senders');
  });

  it('wal_sender_timeout at or below the status interval is an error', () => {
    const fs = problems(evaluateFacts(config({ capture: { statusIntervalSeconds: 10 } }), facts({ a: { walSenderTimeoutMs: 10_000 } })));
    expect(fs.map((f) => [f.check, f.level, f.cluster])).toEqual([['wal_sender_timeout', 'error', 'a']]);
    expect(problems(evaluateFacts(config(), facts({ a: { walSenderTimeoutMs: 0 } })))).toEqual([]);
  });

  it('track_commit_timestamp off is an error on each cluster when last-writer-wins is global or per table', () => {
    const global = problems(evaluateFacts(config(), facts({ a: { trackCommitTimestamp: false }, b: { trackCommitTimestamp: false } })));
    expect(global.map((f) => [f.check, f.level, f.cluster])).toEqual([
      ['track_commit_timestamp', 'error', 'a'],
      ['track_commit_timestamp', 'error', 'b'],
    ]);
    expect(global[0]!.fix).toContain('track_commit_timestamp = on');
    const perTable = config({ conflicts: { policy: 'overwrite', tables: { 'app.t': 'last-writer-wins' } } });
    const fs = problems(evaluateFacts(perTable, facts({ b: { trackCommitTimestamp: false } })));
    expect(fs).toHaveLength(1);
    expect(fs[0]!.message).toContain('app.t');
    expect(problems(evaluateFacts(config({ conflicts: { policy: 'overwrite', tables: {} } }), facts({ a: { trackCommitTimestamp: false } })))).toEqual([]);
  });

  it('replication origins: warning under auto, error under replication-origin, nothing under message', () => {
    const role = {
      superuser: false,
      replication: true,
      originSessionSetup: false,
      originXactSetup: true,
      setSessionReplicationRole: true,
      createOnDatabase: true,
    };
    const f = { a: { role, publicationExists: true } };
    const auto = problems(evaluateFacts(config({ selection: { schemas: ['app'], include: ['app.t'] } }), facts(f)));
    expect(auto.map((x) => [x.check, x.level])).toEqual([['privileges', 'warning']]);
    expect(auto[0]!.message).toContain('cdc.control');
    expect(auto[0]!.fix).toContain('pg_replication_origin_session_setup(text)');
    const strict = problems(evaluateFacts(config({ origin: { method: 'replication-origin' } }), facts(f)));
    expect(strict.map((x) => [x.check, x.level])).toEqual([['privileges', 'error']]);
    expect(problems(evaluateFacts(config({ origin: { method: 'message' } }), facts(f)))).toEqual([]);
  });

  it('DDL triggers: a missing one a non-superuser cannot create is an error when it would record or reject, nothing when it would only warn', () => {
    const role = {
      superuser: false,
      replication: true,
      originSessionSetup: true,
      originXactSetup: true,
      setSessionReplicationRole: true,
      createOnDatabase: true,
    };
    const f = { a: { role, publicationExists: true, ddlTriggerExists: false }, b: { role, publicationExists: true, ddlTriggerExists: false } };
    const sel = { selection: { schemas: ['app'], include: ['app.t'] } };
    const rec = problems(evaluateFacts(config(sel), facts(f)));
    expect(rec.map((x) => [x.check, x.level, x.cluster, x.object])).toEqual([['privileges', 'error', 'a', 'event trigger cdc_p_ddl']]);
    expect(rec[0]!.fix).toContain('ddl.forward: off');
    const reject = problems(evaluateFacts(config({ ...sel, ddl: { forward: 'off', reverse: 'reject' } }), facts(f)));
    expect(reject.map((x) => [x.cluster, x.level])).toEqual([['b', 'error']]);
    expect(problems(evaluateFacts(config({ ...sel, ddl: { forward: 'off', reverse: 'warn' } }), facts(f)))).toEqual([]);
    // Made once by a superuser: nothing to create.
    expect(problems(evaluateFacts(config(sel), facts({ a: { ...f.a, ddlTriggerExists: true }, b: f.b })))).toEqual([]);
  });

  it('replica identity NOTHING, and USAGE-INDEX on a dropped index, are errors', () => {
    const fs = problems(
      evaluateFacts(
        config(),
        facts({
          a: {
            tables: [
              table({ table: 'n', replicaIdentity: 'nothing' }),
              table({ table: 'i', hasPrimaryKey: false, replicaIdentity: 'index', replicaIdentityIndexOk: false }),
            ],
          },
          b: { tables: [table({ table: 'n' }), table({ table: 'i', hasPrimaryKey: false, replicaIdentity: 'full' })] },
        }),
      ),
    );
    const ri = fs.filter((f) => f.check === 'replica_identity');
    expect(ri.map((f) => [f.level, f.cluster, f.object])).toEqual([
      ['error', 'a', 'app.n'],
      ['error', 'a', 'app.i'],
      ['warning', 'b', 'app.i'],
    ]);
    expect(ri[0]!.fix).toBe('ALTER TABLE "app"."n" REPLICA IDENTITY DEFAULT;');
    expect(ri[1]!.fix).toBe('ALTER TABLE "app"."i" REPLICA IDENTITY FULL;');
  });

  it('an unreachable cluster is one error and its checks are skipped, the other cluster is still checked', () => {
    const f: PrecheckFacts = {
      ...facts({ b: { walLevel: 'minimal' } }),
      clusters: {
        a: { reachable: false, name: 'a', host: 'ha', port: 5001, database: 'postgres', user: 'sync', reason: 'connect ECONNREFUSED' },
        b: cluster('b', { walLevel: 'minimal' }),
      },
    };
    const fs = problems(evaluateFacts(config(), f));
    expect(fs.map((x) => [x.check, x.cluster])).toEqual([
      ['connection', 'a'],
      ['wal_level', 'b'],
    ]);
    expect(fs[0]!.message).toContain('ha:5001');
    expect(fs[0]!.message).toContain('ECONNREFUSED');
    expect(fs[0]!.message).toContain('skipped');
  });

  it('Kafka: transaction log replication factor above the broker count is an error', () => {
    const fs = problems(evaluateFacts(config(), facts({ kafka: { ...kafkaOk, transactionStateLogReplicationFactor: 3 } })));
    expect(fs.map((x) => [x.check, x.level, x.object])).toEqual([['kafka_transactions', 'error', 'transaction.state.log.replication.factor']]);
  });

  it('Kafka topics: an existing topic with extra partitions breaks total order and is an error', () => {
    // The config itself accepts only one partition (shared/config.ts), so more is always an error here.
    const topic = {
      name: 'p.a.to.b',
      exists: true as const,
      partitions: 3,
      replicationFactor: 1,
      cleanupPolicy: 'delete',
      retentionMs: -1,
      retentionBytes: -1,
    };
    const more = problems(evaluateFacts(config(), facts({ kafka: { ...kafkaOk, topics: [topic] } })));
    expect(more.map((x) => [x.check, x.level, x.object])).toEqual([['kafka_topics', 'error', 'p.a.to.b']]);
  });

  it('formatFindings: one line each, grouped by check, fix indented below, summary last', () => {
    const text = formatFindings([
      { level: 'ok', check: 'wal_level', cluster: 'a', message: 'cluster a (h:1): wal_level = logical' },
      { level: 'error', check: 'wal_level', cluster: 'b', message: 'cluster b (h:2): wal_level is replica', fix: 'ALTER SYSTEM SET wal_level = logical;' },
      { level: 'warning', check: 'replica_identity', cluster: 'a', message: 'cluster a (h:1): table "s"."t" has no primary key' },
      { level: 'error', check: 'connection', cluster: 'c', message: 'cluster c (h:3): cannot connect' },
    ]);
    expect(text.split('\n')).toEqual([
      'Connections:',
      '  ERROR cluster c (h:3): cannot connect',
      'wal_level:',
      '  ERROR cluster b (h:2): wal_level is replica',
      '         fix: ALTER SYSTEM SET wal_level = logical;',
      '  ok    cluster a (h:1): wal_level = logical',
      'Primary key / replica identity:',
      '  WARN  cluster a (h:1): table "s"."t" has no primary key',
      'precheck: 2 error(s), 1 warning(s)',
    ]);
  });

  it('encryption: each connection says whether it is encrypted; plain text to a remote host is a warning, to loopback not', () => {
    const plain = config({ kafka: { brokers: ['k:9092'] }, registry: { url: 'http://r:8081', username: 'u', password: 'pw' } });
    const f = facts({ a: { tls: 'TLSv1.3' }, b: { tls: null } });
    const enc = evaluateFacts(plain, f).filter((x) => x.check === 'encryption');
    expect(enc.map((x) => [x.cluster, x.level])).toEqual([
      ['a', 'ok'],
      ['b', 'warning'],
      ['kafka', 'warning'],
      ['registry', 'warning'],
    ]);
    expect(enc[0]!.message).toContain('encrypted (TLSv1.3, sslMode disable');
    expect(enc[1]!.fix).toContain('clusters.b.sslMode');
    expect(enc[2]!.message).toContain('PLAINTEXT, not encrypted');
    expect(enc[3]!.message).toBe('schema registry at http://r:8081: HTTP, not encrypted, basic auth as u');
    const secure = config({ kafka: { brokers: ['k:9092'], ssl: { caFile: 'ca.pem' }, sasl: { mechanism: 'scram-sha-512', username: 'svc', password: 'x' } } });
    const k = evaluateFacts(secure, facts()).filter((x) => x.check === 'encryption' && x.cluster !== 'a' && x.cluster !== 'b');
    expect(k.map((x) => [x.level, x.message])).toEqual([
      ['ok', 'Kafka at k:9092: SASL_SSL (SCRAM-SHA-512 as svc)'],
      ['ok', 'schema registry at https://r:8081: HTTPS'],
    ]);
    const local = config({ clusters: { a: { host: '127.0.0.1' }, b: { host: 'localhost' } } });
    const l = evaluateFacts(local, facts({ a: { host: '127.0.0.1', tls: null }, b: { host: 'localhost', tls: null } })).filter(
      (x) => x.check === 'encryption' && x.cluster !== 'kafka' && x.cluster !== 'registry',
    );
    expect(l.map((x) => x.level)).toEqual(['ok', 'ok']);
  });
});

describe('sequencesOverlap', () => {
  const seq = (next: bigint, increment = 1n, over: Partial<SequenceFacts> = {}): SequenceFacts => ({
    column: 'id',
    sequence: '"s"."q"',
    identity: false,
    increment,
    min: 1n,
    max: 9223372036854775807n,
    cycle: false,
    next,
    ...over,
  });

  it('same increment, same residue and open ranges overlap', () => {
    expect(sequencesOverlap(seq(1n), seq(1n))).toBe(true);
    expect(sequencesOverlap(seq(1n), seq(1000n))).toBe(true);
    expect(sequencesOverlap(seq(1n, 2n), seq(3n, 2n))).toBe(true);
  });

  it('odd/even interleaving does not overlap', () => {
    expect(sequencesOverlap(seq(1n, 2n), seq(2n, 2n))).toBe(false);
    expect(sequencesOverlap(seq(101n, 2n), seq(102n, 2n))).toBe(false);
    expect(sequencesOverlap(seq(1n, 10n), seq(2n, 10n))).toBe(false);
  });

  it('different increments overlap exactly when the progressions meet (CRT)', () => {
    expect(sequencesOverlap(seq(1n, 2n), seq(2n, 4n))).toBe(false); // odd vs 2 mod 4
    expect(sequencesOverlap(seq(1n, 2n), seq(3n, 4n))).toBe(true); // 3, 7, … are odd
    expect(sequencesOverlap(seq(1n, 3n), seq(2n, 5n))).toBe(true); // 7
  });

  it('disjoint ranges do not overlap; exhausted sequences hand out nothing', () => {
    expect(sequencesOverlap(seq(1n, 1n, { max: 1_000_000n }), seq(1_000_001n))).toBe(false);
    expect(sequencesOverlap(seq(11n, 1n, { max: 10n }), seq(1n))).toBe(false);
    expect(sequencesOverlap(seq(1n, 1n, { max: 5n }), seq(5n))).toBe(true);
  });

  it('descending sequences and cycling sequences', () => {
    expect(sequencesOverlap(seq(-1n, -1n, { min: -100n, max: -1n }), seq(1n))).toBe(false);
    expect(sequencesOverlap(seq(-1n, -1n, { min: -100n, max: -1n }), seq(-50n, -1n, { min: -100n, max: -1n }))).toBe(true);
    expect(sequencesOverlap(seq(500n, 1n, { max: 1000n, cycle: true }), seq(100n, 1n, { max: 200n }))).toBe(true);
  });

  it('the suggested odd/even fix makes the warning go away', () => {
    const a = seq(57n);
    const b = seq(12n);
    const fs = evaluateFacts(config(), facts({ a: { tables: [table({ sequences: [a] })] }, b: { tables: [table({ sequences: [b] })] } }));
    const w = fs.filter((f) => f.check === 'sequences' && f.level === 'warning');
    expect(w).toHaveLength(1);
    expect(w[0]!.fix).toBe('on a: ALTER SEQUENCE "s"."q" INCREMENT BY 2 RESTART WITH 57;  on b: ALTER SEQUENCE "s"."q" INCREMENT BY 2 RESTART WITH 58;');
    // DDL replication (ddl.forward: replicate by default) would carry a's ALTER SEQUENCE to b.
    expect(w[0]!.message).toContain('pgbridge setup --split-sequences');
    expect(w[0]!.message).toContain("by hand, run each ALTER after SET session_replication_role = replica, or DDL replication carries a's to b");
    const off = evaluateFacts(
      config({ ddl: { forward: 'off' } }),
      facts({ a: { tables: [table({ sequences: [a] })] }, b: { tables: [table({ sequences: [b] })] } }),
    );
    expect(off.find((f) => f.check === 'sequences' && f.level === 'warning')!.message).not.toContain('session_replication_role');
    expect(sequencesOverlap(seq(57n, 2n), seq(58n, 2n))).toBe(false);
  });
});
