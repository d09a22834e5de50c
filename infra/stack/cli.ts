/**
 * infra/stack command line: up [service…] | down [service…] | restart <service> [--crash] | status | reset | env
 * `connect` (Kafka Connect with the Debezium JDBC sink, for the interop test) is started only
 * when named (`up connect`); `down` stops it with the rest.
 * `--secure` with any of them: the TLS stack (own ports and folder, see StackSettings.secure).
 * Run through the `infra/stack/stack` script, which installs and builds first.
 */
import { endpointsOf, secureFiles, stackSettings } from './settings.js';
import { down, formatStatus, reset, SERVICES, startService, status, stopService, up, type ServiceName } from './stack.js';
import { connectAnswers, connectDown, connectPaths, connectUp } from './connect.js';

function services(args: string[]): ServiceName[] {
  const named = args.filter((a) => !a.startsWith('--') && a !== 'connect');
  for (const n of named) {
    if (!SERVICES.includes(n as ServiceName)) throw new Error(`unknown service ${JSON.stringify(n)}; the stack has ${SERVICES.join(', ')}`);
  }
  return named.length ? (named as ServiceName[]) : [...SERVICES];
}

async function main(argv: string[]): Promise<number> {
  const cmd = argv[0] ?? 'status';
  const s = stackSettings(argv.includes('--secure') ? { ...process.env, PGBRIDGE_STACK_SECURE: '1' } : process.env);
  const say = (line: string): void => console.log(line);
  switch (cmd) {
    case 'up':
    case 'reset': {
      const t0 = Date.now();
      if (cmd === 'up' && argv.slice(1).every((a) => a === 'connect' || a.startsWith('--')) && argv.includes('connect')) {
        await connectUp(s, say);
        return 0;
      }
      if (cmd === 'reset') await connectDown(s);
      const ep = cmd === 'up' ? await up(s, say, services(argv.slice(1))) : await reset(s, say);
      if (argv.slice(1).includes('connect')) await connectUp(s, say);
      console.log(`stack ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      console.log(`  postgres a  postgresql://${ep.pg.a.user}@${ep.pg.a.host}:${ep.pg.a.port}/${ep.pg.a.database}`);
      console.log(`  postgres b  postgresql://${ep.pg.b.user}@${ep.pg.b.host}:${ep.pg.b.port}/${ep.pg.b.database}`);
      console.log(`  kafka       ${ep.kafkaBrokers.join(',')}`);
      console.log(`  registry    ${ep.registryUrl}`);
      if (s.secure) {
        const f = secureFiles(s);
        console.log(
          `  tls         PostgreSQL: TLS only, client certificate (sslMode verify-full, sslRootCert ${f.caCert}, sslCert ${f.clientCert}, sslKey ${f.clientKey})`,
        );
        console.log(
          `              Kafka: SASL_SSL, user ${f.kafkaUser} (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN), password in ${f.kafkaPasswordFile}, CA ${f.caCert}`,
        );
      }
      return 0;
    }
    case 'down': {
      const named = argv.slice(1).filter((a) => !a.startsWith('--'));
      if ((named.length === 0 || named.includes('connect')) && (await connectDown(s))) say('connect: stopped');
      if (named.length === 0 || named.some((n) => n !== 'connect')) await down(s, say, services(argv.slice(1)));
      return 0;
    }
    case 'restart': {
      // For fault drills by hand: `restart pg-a --crash` is an immediate-mode crash, `restart kafka --crash` a SIGKILL.
      const named = argv.slice(1).filter((a) => !a.startsWith('--'));
      if (named.length !== 1) throw new Error(`restart takes one service: ${SERVICES.join(', ')}`);
      const [service] = services(named);
      await stopService(s, service!, argv.includes('--crash') ? 'crash' : 'graceful');
      say(`${service}: stopped${argv.includes('--crash') ? ' (crash)' : ''}`);
      await startService(s, service!, say);
      return 0;
    }
    case 'status': {
      const rows = await status(s);
      console.log(formatStatus(rows));
      if (await connectAnswers(s).catch(() => false)) console.log(`connect   running  ${connectPaths(s).url} (Kafka Connect, started by \`up connect\`)`);
      return rows.every((r) => r.healthy) ? 0 : 1;
    }
    case 'env': {
      // Shell-friendly endpoints, for scripts: eval "$(infra/stack/stack env)"
      const ep = endpointsOf(s);
      console.log(`PGBRIDGE_PG_A_URL=postgresql://${ep.pg.a.user}@${ep.pg.a.host}:${ep.pg.a.port}/${ep.pg.a.database}`);
      console.log(`PGBRIDGE_PG_B_URL=postgresql://${ep.pg.b.user}@${ep.pg.b.host}:${ep.pg.b.port}/${ep.pg.b.database}`);
      console.log(`PGBRIDGE_KAFKA_BROKERS=${ep.kafkaBrokers.join(',')}`);
      console.log(`PGBRIDGE_REGISTRY_URL=${ep.registryUrl}`);
      return 0;
    }
    default:
      console.error(`unknown command ${JSON.stringify(cmd)}; use up, down, restart, status, reset or env`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  },
);
