/**
 * The facts precheck gathers (gather.ts, gather-services.ts) and the rules evaluate: plain
 * data, so the rules are pure and unit-tested over hand-made facts. An unreachable system is
 * a fact too, never an exception.
 */
import type { Service } from '../grants.js';
import type { ExtensionFacts } from './extensions.js';
import type { TableSettingsFacts } from './table-settings.js';

export interface SequenceFacts {
  readonly column: string;
  /** Quoted, schema-qualified sequence name. */
  readonly sequence: string;
  /** Identity column (fix with ALTER TABLE … ALTER COLUMN) rather than a nextval() default. */
  readonly identity: boolean;
  readonly increment: bigint;
  readonly min: bigint;
  readonly max: bigint;
  readonly cycle: boolean;
  /** The value nextval() hands out next (start when never called or not readable). */
  readonly next: bigint;
}

export interface TableFacts {
  readonly schema: string;
  readonly table: string;
  readonly hasPrimaryKey: boolean;
  readonly replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
  /** False when REPLICA IDENTITY USING INDEX names an index that no longer exists (behaves as NOTHING). */
  readonly replicaIdentityIndexOk: boolean;
  /** The configured user owns it (or is a member of the owner): needed to add it to a publication. */
  readonly owned: boolean;
  readonly privileges: { readonly select: boolean; readonly insert: boolean; readonly update: boolean; readonly delete: boolean; readonly truncate: boolean };
  readonly columns: readonly { readonly name: string; readonly type: string }[];
  /** Whether it holds a row; null when not looked at (not the forward destination) or not readable. */
  readonly hasRows: boolean | null;
  readonly sequences: readonly SequenceFacts[];
}

export interface ReachableClusterFacts {
  readonly reachable: true;
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  readonly serverVersion: string;
  readonly serverVersionNum: number;
  /** TLS protocol of this session (pg_stat_ssl), null when not encrypted; undefined when not known. */
  readonly tls?: string | null;
  readonly walLevel: string;
  readonly trackCommitTimestamp: boolean;
  readonly maxReplicationSlots: number;
  readonly maxWalSenders: number;
  /** 0 = disabled. */
  readonly walSenderTimeoutMs: number;
  readonly slotsInUse: number;
  readonly sendersInUse: number;
  /** Our slot cdc_<pipeline>_<cluster>; null when it does not exist yet. */
  readonly ownSlot: { readonly active: boolean } | null;
  readonly role: {
    readonly superuser: boolean;
    readonly replication: boolean;
    readonly originSessionSetup: boolean;
    readonly originXactSetup: boolean;
    readonly setSessionReplicationRole: boolean;
    readonly createOnDatabase: boolean;
  };
  readonly cdcSchemaExists: boolean;
  readonly publicationExists: boolean;
  /** The pipeline's DDL event trigger (ddl.*) is in place. */
  readonly ddlTriggerExists?: boolean;
  /** Selected schemas that exist, and whether the user has USAGE on each. */
  readonly schemas: readonly { readonly name: string; readonly usage: boolean }[];
  readonly tables: readonly TableFacts[];
  /** The roles clusters.<name>.capture/.apply name, and what each lacks of what `pgbridge grants` gives. */
  readonly serviceRoles?: readonly { readonly service: Service; readonly role: string; readonly missing: readonly string[] }[];
  /** Set when the table catalog could not be read (tables is then empty). */
  readonly tablesError?: string;
}

export interface UnreachableClusterFacts {
  readonly reachable: false;
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  readonly reason: string;
}

export type ClusterFacts = ReachableClusterFacts | UnreachableClusterFacts;

export type TopicFacts =
  | { readonly name: string; readonly exists: false }
  | {
      readonly name: string;
      readonly exists: true;
      readonly partitions: number;
      readonly replicationFactor: number;
      readonly cleanupPolicy: string;
      /** -1 = keep forever */
      readonly retentionMs: number;
      readonly retentionBytes: number;
      /** The topic's max.message.bytes (unknown when the broker did not say). */
      readonly maxMessageBytes?: number;
    };

export type KafkaFacts =
  | { readonly reachable: false; readonly brokers: string; readonly reason: string }
  | {
      readonly reachable: true;
      readonly brokers: string;
      readonly brokerCount: number;
      /** Broker defaults for the transaction log; undefined when the broker did not say. */
      readonly transactionStateLogReplicationFactor?: number;
      readonly transactionStateLogMinIsr?: number;
      readonly topics: readonly TopicFacts[];
      readonly topicsError?: string;
    };

export interface RegistryFacts {
  readonly url: string;
  /** HTTP status of GET <url>/subjects, when an answer came. */
  readonly status?: number;
  readonly reason?: string;
}

export interface PrecheckFacts {
  readonly clusters: Readonly<Record<string, ClusterFacts>>;
  readonly kafka: KafkaFacts;
  readonly registry: RegistryFacts;
  /** The tables selection.tables names, per cluster (table-settings.ts). */
  readonly tableSettings?: TableSettingsFacts;
  /** Extensions of the forward source the selected objects use, against the destination (extensions.ts). */
  readonly extensions?: ExtensionFacts;
}
