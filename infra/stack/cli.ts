/**
 * infra/stack command line: up | down | status | reset | env
 * Run through the `infra/stack/stack` script, which installs and builds first.
 */
import { endpointsOf, stackSettings } from './settings.js';
import { down, formatStatus, reset, status, up } from './stack.js';

async function main(argv: string[]): Promise<number> {
  const cmd = argv[0] ?? 'status';
  const s = stackSettings();
  const say = (line: string): void => console.log(line);
  switch (cmd) {
    case 'up':
    case 'reset': {
      const t0 = Date.now();
      const ep = cmd === 'up' ? await up(s, say) : await reset(s, say);
      console.log(`stack ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      console.log(`  postgres a  postgresql://${ep.pg.a.user}@${ep.pg.a.host}:${ep.pg.a.port}/${ep.pg.a.database}`);
      console.log(`  postgres b  postgresql://${ep.pg.b.user}@${ep.pg.b.host}:${ep.pg.b.port}/${ep.pg.b.database}`);
      console.log(`  kafka       ${ep.kafkaBrokers.join(',')}`);
      console.log(`  registry    ${ep.registryUrl}`);
      return 0;
    }
    case 'down':
      await down(s, say);
      return 0;
    case 'status': {
      const rows = await status(s);
      console.log(formatStatus(rows));
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
      console.error(`unknown command ${JSON.stringify(cmd)}; use up, down, status, reset or env`);
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
