/**
 * The plan of a statement exactly as rowfleet's code issues it: the function runs against a
 * client whose query() prefixes `EXPLAIN (ANALYZE, BUFFERS)`, inside a transaction rolled back
 * afterwards (ANALYZE executes the statement). No SQL is copied out of src/ to be explained.
 *
 * The plan shown is the one for this call's values. A named statement that has run five times on
 * a connection may use a generic plan instead, which EXPLAIN ANALYZE of bound parameters cannot
 * show; the latencies measured through the real statement are what tell.
 */
import type pg from 'pg';

export async function explainAnalyze(client: pg.PoolClient, run: (db: pg.PoolClient) => Promise<unknown>): Promise<string[]> {
  const plan: string[] = [];
  const explaining = new Proxy(client, {
    get(target, property) {
      if (property === 'query') {
        // The statement's name is dropped: a prepared statement of that name would hold other text.
        return async (config: pg.QueryConfig) => {
          const result = await target.query<{ 'QUERY PLAN': string }>({ text: `EXPLAIN (ANALYZE, BUFFERS) ${config.text}`, values: config.values ?? [] });
          plan.push(...result.rows.map((row) => row['QUERY PLAN']));
          return { rows: [], rowCount: 0 };
        };
      }
      const value: unknown = Reflect.get(target, property);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  await client.query('BEGIN');
  try {
    await run(explaining);
  } finally {
    await client.query('ROLLBACK');
  }
  return plan;
}

/** The plan's nodes and timings, without the per-node detail lines (conditions, buffers, ...). */
export function planOutline(plan: readonly string[]): string[] {
  return plan.filter((line, i) => i === 0 || line.includes('->') || /^\s*CTE /.test(line) || /^(Planning|Execution) Time/.test(line));
}


/**
 * The plans of the statements a call runs inside database functions (rowfleet's claim is a
 * plpgsql function, whose EXPLAIN shows only a Function Scan): auto_explain, loaded into this
 * session, with nested statements, ANALYZE and BUFFERS, reporting at NOTICE level so that the
 * plans come back to this client instead of the server log. Inside a rolled-back transaction, the
 * settings SET LOCAL. Undefined when auto_explain cannot be loaded (LOAD needs superuser).
 */
export async function explainNested(client: pg.PoolClient, run: (db: pg.PoolClient) => Promise<unknown>): Promise<string[] | undefined> {
  const notices: string[] = [];
  const onNotice = (notice: { message?: string }) => {
    if (notice.message?.startsWith('duration:')) notices.push(notice.message);
  };
  await client.query('BEGIN');
  try {
    await client.query(`LOAD 'auto_explain'`);
    for (const setting of ['log_min_duration = 0', 'log_analyze = on', 'log_buffers = on', 'log_nested_statements = on', "log_level = 'notice'"]) {
      await client.query(`SET LOCAL auto_explain.${setting}`);
    }
    await client.query(`SET LOCAL client_min_messages = notice`);
    client.on('notice', onNotice);
    await run(client);
    // The last statement's plan can arrive after its result: the next statement flushes it (and
    // its own plan is left out, as are an EXPLAIN's, planned and never run).
    await client.query('SELECT 1 AS flush_auto_explain');
    return notices.filter((n) => !n.includes('flush_auto_explain') && !/Query Text:\s*EXPLAIN\b/i.test(n)).flatMap((n) => n.split('\n'));
  } catch {
    return undefined;
  } finally {
    client.off('notice', onNotice);
    await client.query('ROLLBACK');
  }
}
