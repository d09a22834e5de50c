/**
 * The run's chart, as a hand-written SVG next to the JSON: throughput ratios (pgbridge ÷
 * native) as horizontal bars, and latency percentiles of both engines as grouped bars.
 */
import type { BenchResults } from './report.js';
import { isFailed, type ThroughputResult } from './scenarios.js';

const W = 960;
const BRIDGE = '#2b6cb0';
const NATIVE = '#a0aec0';

function esc(s: string): string {
  return s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
}

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;
}

function rect(x: number, y: number, w: number, h: number, fill: string): string {
  return `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(0, w).toFixed(1)}" height="${Math.max(0, h).toFixed(1)}" fill="${fill}"/>`;
}

function throughputPanel(rows: readonly ThroughputResult[], top: number): { svg: string[]; height: number } {
  const svg: string[] = [];
  const left = 300;
  const right = W - 80;
  const barH = 18;
  const gap = 10;
  svg.push(text(20, top + 20, 'Throughput: pgbridge rows/s ÷ native logical replication rows/s (backlog drain)', 'class="h"'));
  const y0 = top + 40;
  const max = Math.max(1.25, ...rows.map((r) => (Number.isFinite(r.ratio) ? r.ratio * 1.1 : 0)));
  const x = (v: number): number => left + ((right - left) * v) / max;
  rows.forEach((r, i) => {
    const y = y0 + i * (barH + gap);
    const label = r.scenario === 'big-transaction' ? 'one big transaction' : `${r.scenario} ${r.shape}`;
    svg.push(text(left - 8, y + barH - 4, `${label} (${r.totalRows.toLocaleString('en-US')} rows)`, 'text-anchor="end"'));
    if (Number.isFinite(r.ratio)) {
      svg.push(rect(left, y, x(r.ratio) - left, barH, BRIDGE));
      svg.push(text(x(r.ratio) + 6, y + barH - 4, `${r.ratio.toFixed(2)}×`));
    } else {
      svg.push(text(left + 6, y + barH - 4, isFailed(r.pgbridge) ? 'pgbridge failed' : 'native failed', 'fill="#c53030"'));
    }
  });
  const bottom = y0 + rows.length * (barH + gap);
  svg.push(`<line x1="${x(1).toFixed(1)}" y1="${y0 - 6}" x2="${x(1).toFixed(1)}" y2="${bottom}" stroke="#c53030" stroke-dasharray="4 3"/>`);
  svg.push(text(x(1), bottom + 14, 'native = 1', 'text-anchor="middle" fill="#c53030"'));
  svg.push(`<line x1="${left}" y1="${y0 - 6}" x2="${left}" y2="${bottom}" stroke="#333"/>`);
  return { svg, height: bottom + 24 - top };
}

function latencyPanel(res: BenchResults, top: number): { svg: string[]; height: number } {
  const svg: string[] = [];
  svg.push(text(20, top + 20, 'Latency, source commit → row on the destination (ms, single-row transactions at a fixed rate)', 'class="h"'));
  const plotTop = top + 50;
  const plotH = 220;
  const left = 80;
  const ks = ['p50', 'p95', 'p99'] as const;
  const vals = res.latency.flatMap((l) => [l.pgbridge, l.native].flatMap((p) => (isFailed(p) ? [] : ks.map((k) => p[k]))));
  const max = Math.max(1, ...vals) * 1.15;
  const y = (v: number): number => plotTop + plotH - (plotH * v) / max;
  const groupW = (W - left - 40) / Math.max(1, res.latency.length);
  const barW = Math.min(36, groupW / 8);
  if (res.latency.length === 0) svg.push(text(left + 20, plotTop + plotH / 2, 'not run'));
  res.latency.forEach((l, gi) => {
    const gx = left + gi * groupW + groupW / 2 - (ks.length * (2 * barW + 14)) / 2;
    ks.forEach((k, ki) => {
      const bx = gx + ki * (2 * barW + 14);
      for (const [j, p, color] of [
        [0, l.pgbridge, BRIDGE],
        [1, l.native, NATIVE],
      ] as const) {
        const xx = bx + j * barW;
        if (isFailed(p)) {
          svg.push(text(xx + barW / 2, plotTop + plotH - 4, '×', 'text-anchor="middle" fill="#c53030"'));
          continue;
        }
        svg.push(rect(xx, y(p[k]), barW - 2, plotTop + plotH - y(p[k]), color));
        svg.push(text(xx + barW / 2, y(p[k]) - 4, p[k] >= 100 ? p[k].toFixed(0) : p[k].toFixed(1), 'text-anchor="middle" class="s"'));
      }
      svg.push(text(bx + barW, plotTop + plotH + 16, k, 'text-anchor="middle"'));
    });
    svg.push(
      text(
        left + gi * groupW + groupW / 2,
        plotTop + plotH + 36,
        `${l.rate} rows/s (pgbridge ÷ native p99 ${Number.isFinite(l.ratio.p99) ? l.ratio.p99.toFixed(2) : '-'})`,
        'text-anchor="middle"',
      ),
    );
  });
  svg.push(`<line x1="${left}" y1="${plotTop + plotH}" x2="${W - 40}" y2="${plotTop + plotH}" stroke="#333"/>`);
  svg.push(`<line x1="${left}" y1="${plotTop}" x2="${left}" y2="${plotTop + plotH}" stroke="#333"/>`);
  svg.push(text(left - 6, plotTop + 10, `${Math.round(max)} ms`, 'text-anchor="end" class="s"'));
  svg.push(text(left - 6, plotTop + plotH, '0', 'text-anchor="end" class="s"'));
  const ly = plotTop + plotH + 56;
  svg.push(
    rect(left, ly - 10, 12, 12, BRIDGE),
    text(left + 18, ly, 'pgbridge'),
    rect(left + 100, ly - 10, 12, 12, NATIVE),
    text(left + 118, ly, 'native logical replication'),
  );
  return { svg, height: ly + 16 - top };
}

export function renderChart(res: BenchResults): string {
  const rows = [...res.oneWay, ...res.twoWay, ...(res.bigTransaction ? [res.bigTransaction] : [])];
  const head = [text(20, 28, `pgbridge benchmark ${res.date} (${res.mode}) — ratios measured in one run on a noisy shared machine`, 'class="t"')];
  const t = throughputPanel(rows, 44);
  const l = latencyPanel(res, 44 + t.height + 20);
  const height = 44 + t.height + 20 + l.height + 10;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${Math.round(height)}" viewBox="0 0 ${W} ${Math.round(height)}" font-family="sans-serif" font-size="12">`,
    '<style>.t{font-size:15px;font-weight:bold}.h{font-size:13px;font-weight:bold}.s{font-size:10px}</style>',
    `<rect width="${W}" height="${Math.round(height)}" fill="#fff"/>`,
    ...head,
    ...t.svg,
    ...l.svg,
    '</svg>',
    '',
  ].join('\n');
}
