// What a service counts for its operators: calls by method with their durations and errors by code, bytes
// converted, and gauges read at scrape time (layers, unions mounted) — rendered in Prometheus' text
// exposition format (version 0.0.4), or as one JSON object. Label values come from a closed set the caller
// names (a client's method path is mapped to `other` by the caller), so a client cannot grow the series.

import type { LcowDriver } from './driver.ts';

type Labels = Readonly<Record<string, string>>;

interface Family {
  help: string;
  type: 'counter' | 'gauge' | 'summary';
  /** Sample value by its label text (`{method="Get"}`, or '' for none); a summary keeps `_sum` and `_count`. */
  samples: Map<string, number>;
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(
    ([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`,
  );
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** A service's counters, call timings and gauges. */
export class Metrics {
  readonly #families = new Map<string, Family>();
  /** Gauges read together at each scrape: their help by name, and one read that gives every value. */
  readonly #gauges: { help: Record<string, string>; read: () => Promise<Record<string, number>> }[] = [];

  #family(name: string, help: string, type: Family['type']): Family {
    let f = this.#families.get(name);
    if (!f) this.#families.set(name, (f = { help, type, samples: new Map() }));
    return f;
  }

  /** Adds `by` to counter `name` (a name ending in `_total`). */
  count(name: string, help: string, labels: Labels = {}, by = 1): void {
    const s = this.#family(name, help, 'counter').samples;
    const key = labelText(labels);
    s.set(key, (s.get(key) ?? 0) + by);
  }

  /** Adds one observation of `seconds` to summary `name` (its `_count` and `_sum`). */
  observe(name: string, help: string, labels: Labels, seconds: number): void {
    const s = this.#family(name, help, 'summary').samples;
    const key = labelText(labels);
    s.set(`_count${key}`, (s.get(`_count${key}`) ?? 0) + 1);
    s.set(`_sum${key}`, (s.get(`_sum${key}`) ?? 0) + seconds);
  }

  /**
   * One call of a protocol method: `PREFIX_calls_total`, `PREFIX_call_seconds` and, when it failed,
   * `PREFIX_errors_total` by method and error code.
   */
  call(prefix: string, method: string, seconds: number, errorCode: string | null = null): void {
    this.count(`${prefix}_calls_total`, 'Calls served, by method.', { method });
    this.observe(`${prefix}_call_seconds`, 'Time to serve a call, by method.', { method }, seconds);
    if (errorCode !== null)
      this.count(`${prefix}_errors_total`, 'Calls that failed, by method and error code.', {
        method,
        code: errorCode,
      });
  }

  /** A value read when the metrics are (the number of layers, of unions mounted). */
  gauge(name: string, help: string, read: () => Promise<number> | number): void {
    this.gauges({ [name]: help }, async () => ({ [name]: await read() }));
  }

  /** Several values read at once when the metrics are (one status of the driver for all of them). */
  gauges(help: Record<string, string>, read: () => Promise<Record<string, number>>): void {
    this.#gauges.push({ help, read });
  }

  /** Prometheus' text format. */
  async render(): Promise<string> {
    const lines: string[] = [];
    for (const g of this.#gauges) {
      const values = await g.read();
      for (const [name, help] of Object.entries(g.help))
        lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${values[name] ?? 0}`);
    }
    for (const [name, f] of [...this.#families].sort(([a], [b]) => (a < b ? -1 : 1))) {
      lines.push(`# HELP ${name} ${f.help}`, `# TYPE ${name} ${f.type}`);
      // A summary's keys start with `_count` or `_sum`: `NAME_count{…}`.
      for (const [key, v] of f.samples) lines.push(`${name}${key} ${v}`);
    }
    return `${lines.join('\n')}\n`;
  }

  /** The same as one object: `{ "name{labels}": value }`. */
  async toJSON(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const g of this.#gauges) Object.assign(out, await g.read());
    for (const [name, f] of this.#families) for (const [key, v] of f.samples) out[`${name}${key}`] = v;
    return out;
  }
}

/**
 * The data root's gauges for a service: `lcow_layers` and `lcow_unions_mounted`, from one `status()` per
 * scrape of the driver `driver()` gives (0 before it has one).
 */
export function driverGauges(metrics: Metrics, driver: () => LcowDriver | null): void {
  metrics.gauges(
    {
      lcow_layers: 'Layers in the data root.',
      lcow_unions_mounted: 'Unions mounted now (containers running or being set up).',
    },
    async () => {
      const s = await driver()?.status();
      return { lcow_layers: s?.layers ?? 0, lcow_unions_mounted: s?.mounted.length ?? 0 };
    },
  );
}
