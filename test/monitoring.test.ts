/**
 * The monitoring files in the repo (monitoring/alerts.yml, monitoring/grafana-dashboard.json) name
 * only metrics that rowfleet exposes, with the labels it gives them: a renamed metric fails here
 * instead of silently emptying a panel or disarming an alert.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createApiMetrics } from '../src/http/metrics.ts';
import { WorkerMetrics } from '../src/worker/metrics.ts';
import { fleetMetrics } from '../src/fleet/metrics.ts';
import type { Fleet } from '../src/fleet/fleet.ts';

const read = (file: string) => fs.readFileSync(new URL(`../monitoring/${file}`, import.meta.url), 'utf8');

/** Every metric name exposed, with its label names, from each process kind's registry. */
async function exposed(): Promise<Map<string, Set<string>>> {
  const names = new Map<string, Set<string>>();
  const add = (json: { name: string; type: string; values: { labels: Record<string, unknown> }[] }[]) => {
    for (const m of json) {
      const labels = new Set(m.values.flatMap((v) => Object.keys(v.labels)));
      const series = m.type === 'histogram' ? [m.name, `${m.name}_bucket`, `${m.name}_count`, `${m.name}_sum`] : [m.name];
      for (const s of series) names.set(s, new Set([...(names.get(s) ?? []), ...labels, ...(s.endsWith('_bucket') ? ['le'] : [])]));
    }
  };
  const api = createApiMetrics();
  // Label names show only on series that exist: one of each.
  api.upserts.inc({ kind: 'k', reason: 'applied' });
  api.upsertSeconds.observe({ batch: 'false' }, 0.001);
  api.observe({
    kinds: [{ kind: 'k', counts: { COMPLETED: 1, PROCESSING: 0, PROCESSED: 0, FAILED: 0, DELETED: 0 }, due: 1, oldestDueAgeSeconds: 1 }],
    counts: { COMPLETED: 1, PROCESSING: 0, PROCESSED: 0, FAILED: 0, DELETED: 0 },
    estimated: [], due: 1, oldestDueAgeSeconds: 1, throughput: { '1m': 0, '5m': 0, '15m': 0 },
    lastHour: { processed: 0, failed: 0, retried: 0, rescued: 0, requeued: 0, replayed: 0 }, workers: [], at: new Date().toISOString(),
  });
  add((await api.registry.getMetricsAsJSON()) as never);
  const worker = new WorkerMetrics();
  for (const c of [worker.claimed, worker.processed, worker.chained, worker.superseded, worker.retries, worker.failed, worker.released, worker.rescued]) c.inc({ kind: 'k' });
  worker.failures.inc({ kind: 'k', reason: 'error' });
  worker.handlerSeconds.observe({ kind: 'k', outcome: 'ok' }, 1);
  for (const h of [worker.claimToCompletion, worker.queueWait]) h.observe({ kind: 'k' }, 1);
  add((await worker.registry.getMetricsAsJSON()) as never);
  const fleet = { pids: [], stats: { restarts: 0 }, workerMetrics: async () => [] } as unknown as Fleet;
  const text = (await fleetMetrics(fleet)()).body;
  for (const m of text.matchAll(/^# TYPE (\S+) /gm)) names.set(m[1]!, names.get(m[1]!) ?? new Set());
  return names;
}

/** The rowfleet metrics a PromQL expression reads, with the labels it groups or filters by. */
function referenced(expr: string): { metric: string; labels: string[] }[] {
  const out: { metric: string; labels: string[] }[] = [];
  for (const m of expr.matchAll(/\b(rowfleet_\w+)(\{([^}]*)\})?/g)) out.push({ metric: m[1]!, labels: [...(m[3] ?? '').matchAll(/(\w+)\s*(=~|!=|=)/g)].map((x) => x[1]!) });
  // `by (kind)` must be labels of the metrics summed.
  const by = [...expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((l) => l.trim()));
  return out.map((r) => ({ ...r, labels: [...r.labels, ...by.filter((l) => l !== 'le' || r.metric.endsWith('_bucket'))] }));
}

describe('monitoring/', () => {
  it('alerts.yml: every rule has an expression, a duration and a severity, and reads metrics rowfleet exposes', async () => {
    const names = await exposed();
    const rules = (parse(read('alerts.yml')) as { groups: { rules: { alert: string; expr: string; for: string; labels: { severity: string } }[] }[] }).groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual(expect.arrayContaining(['RowfleetBacklogLagging', 'RowfleetFailureRate', 'RowfleetNoLiveWorkers', 'RowfleetDatabaseDown']));
    for (const rule of rules) {
      expect(rule.for, rule.alert).toMatch(/^\d+[smh]$/);
      expect(['info', 'warning', 'critical'], rule.alert).toContain(rule.labels.severity);
      const refs = referenced(rule.expr);
      expect(refs.length, rule.alert).toBeGreaterThan(0);
      for (const { metric, labels } of refs) {
        expect(names.has(metric), `${rule.alert}: ${metric}`).toBe(true);
        for (const l of labels) expect([...names.get(metric)!], `${rule.alert}: ${metric} by ${l}`).toContain(l);
      }
    }
  });

  it('grafana-dashboard.json: a dashboard whose every panel query reads metrics rowfleet exposes', async () => {
    const names = await exposed();
    const dashboard = JSON.parse(read('grafana-dashboard.json')) as { title: string; panels: { title: string; targets: { expr: string }[] }[] };
    expect(dashboard.title).toBe('rowfleet');
    expect(dashboard.panels.length).toBeGreaterThan(8);
    for (const panel of dashboard.panels) {
      expect(panel.targets.length, panel.title).toBeGreaterThan(0);
      for (const { expr } of panel.targets) {
        for (const { metric, labels } of referenced(expr)) {
          expect(names.has(metric), `${panel.title}: ${metric}`).toBe(true);
          for (const l of labels) expect([...names.get(metric)!], `${panel.title}: ${metric} by ${l}`).toContain(l);
        }
      }
    }
  });
});
