/**
 * apply process: node dist/services/apply/main.js --config pipeline.yaml --direction a-b [--metrics-port n]
 */
import '../../shared/boot.js';
import { directionById, metricsPort } from '../../shared/config.js';
import { errorMessage } from '../../shared/errors.js';
import { metricsRegistry } from '../../shared/http.js';
import { kafkaClient } from '../../shared/kafka.js';
import { createLogger } from '../../shared/log.js';
import { argValue, metricsPortArg, configFromArgs, isMainModule, superviseService } from '../../shared/service-main.js';
import { ApplyRun, applyMetrics } from './apply.js';

export async function main(argv: readonly string[]): Promise<number> {
  const log = createLogger('apply');
  try {
    const cfg = configFromArgs(argv);
    const direction = directionById(cfg, argValue(argv, '--direction') ?? '');
    const registry = metricsRegistry({ service: 'apply', pipeline: cfg.pipeline, direction: direction.id });
    const metrics = applyMetrics(registry);
    const kafka = kafkaClient(cfg, `apply-${direction.id}`, log);
    return await superviseService({
      name: `apply-${direction.id}`,
      cfg,
      log: log.child({ direction: direction.id }),
      registry,
      metricsHost: process.env.PGBRIDGE_METRICS_HOST ?? cfg.metrics.host,
      metricsPort: metricsPortArg(argv, metricsPort(cfg, { apply: direction.id })),
      make: () => new ApplyRun({ cfg, direction, kafka, log, metrics }),
    });
  } catch (err) {
    log.fatal({ err: errorMessage(err) }, 'apply cannot start');
    return 1;
  }
}

if (isMainModule(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
