/**
 * capture process: node dist/services/capture/main.js --config pipeline.yaml --cluster a [--metrics-port n]
 */
import '../../shared/boot.js';
import { metricsPort } from '../../shared/config.js';
import { errorMessage } from '../../shared/errors.js';
import { metricsRegistry } from '../../shared/http.js';
import { kafkaClient } from '../../shared/kafka.js';
import { createLogger } from '../../shared/log.js';
import { argValue, metricsPortArg, configFromArgs, isMainModule, superviseService } from '../../shared/service-main.js';
import { CaptureRun, captureMetrics } from './capture.js';

export async function main(argv: readonly string[]): Promise<number> {
  const log = createLogger('capture');
  try {
    const cfg = configFromArgs(argv);
    const cluster = argValue(argv, '--cluster');
    if (!cluster || !cfg.clusterNames.includes(cluster)) {
      log.fatal(`--cluster must be one of ${cfg.clusterNames.join(', ')}`);
      return 2;
    }
    const registry = metricsRegistry({ service: 'capture', pipeline: cfg.pipeline, cluster });
    const metrics = captureMetrics(registry);
    const kafka = kafkaClient(cfg, `capture-${cluster}`, log);
    return await superviseService({
      name: `capture-${cluster}`,
      cfg,
      log: log.child({ cluster }),
      registry,
      metricsHost: process.env.PGBRIDGE_METRICS_HOST ?? cfg.metrics.host,
      metricsPort: metricsPortArg(argv, metricsPort(cfg, { capture: cluster })),
      make: () => new CaptureRun({ cfg, cluster, kafka, log, metrics }),
    });
  } catch (err) {
    log.fatal({ err: errorMessage(err) }, 'capture cannot start');
    return 1;
  }
}

if (isMainModule(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
