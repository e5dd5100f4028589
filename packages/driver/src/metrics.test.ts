import { describe, expect, it } from 'vitest';
import { Metrics } from './metrics.ts';
import { serveMetrics } from './service.ts';

describe('Metrics', () => {
  it("renders Prometheus' text format: gauges, counters, summaries; label values escaped", async () => {
    const m = new Metrics();
    let layers = 3;
    m.gauge('lcow_layers', 'Layers.', () => layers);
    m.call('lcow_plugin', 'GraphDriver.Get', 0.25);
    m.call('lcow_plugin', 'GraphDriver.Get', 0.5, 'ERR_NOT_FOUND');
    m.count('lcow_plugin_applied_bytes_total', 'Bytes.', {}, 4096);
    m.count('x_total', 'Odd labels.', { v: 'a"b\\c\nd' });
    layers = 4;
    const text = await m.render();
    expect(text).toContain('# HELP lcow_layers Layers.\n# TYPE lcow_layers gauge\nlcow_layers 4\n');
    expect(text).toContain(
      '# TYPE lcow_plugin_calls_total counter\nlcow_plugin_calls_total{method="GraphDriver.Get"} 2\n',
    );
    expect(text).toContain('# TYPE lcow_plugin_call_seconds summary\n');
    expect(text).toContain('lcow_plugin_call_seconds_count{method="GraphDriver.Get"} 2\n');
    expect(text).toContain('lcow_plugin_call_seconds_sum{method="GraphDriver.Get"} 0.75\n');
    expect(text).toContain('lcow_plugin_errors_total{method="GraphDriver.Get",code="ERR_NOT_FOUND"} 1\n');
    expect(text).toContain('lcow_plugin_applied_bytes_total 4096\n');
    expect(text).toContain('x_total{v="a\\"b\\\\c\\nd"} 1\n');
    // Every sample line: a name, optional labels, a number.
    for (const line of text.trim().split('\n'))
      expect(line).toMatch(/^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{.*\})? -?[\d.e+-]+)$/);
    expect(await m.toJSON()).toMatchObject({
      lcow_layers: 4,
      'lcow_plugin_calls_total{method="GraphDriver.Get"}': 2,
      'lcow_plugin_call_seconds_sum{method="GraphDriver.Get"}': 0.75,
    });
  });

  it('served on an opt-in address: /metrics in text format, anything else 404; a bad address is ERR_USAGE', async () => {
    const m = new Metrics();
    m.count('a_total', 'A.');
    const served = await serveMetrics('127.0.0.1:0', m);
    try {
      const r = await fetch(served.url);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe('text/plain; version=0.0.4');
      expect(await r.text()).toContain('a_total 1\n');
      expect((await fetch(served.url.replace('/metrics', '/other'))).status).toBe(404);
    } finally {
      await served.close();
    }
    await expect(serveMetrics('nowhere', m)).rejects.toMatchObject({ code: 'ERR_USAGE' });
    await expect(serveMetrics('127.0.0.1:99999', m)).rejects.toMatchObject({ code: 'ERR_USAGE' });
  });
});
