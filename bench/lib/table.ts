/**
 * The tables of the benches' output and of the report (bench/lib/report.ts); re-exported by the
 * harness, where the benches import it from.
 */

/**
 * A plain-text table whose columns line up, in Markdown pipe syntax so it pastes into an issue.
 * `align` has one letter per column: `l` or `r` (numbers read best right-aligned).
 */
export function renderTable(align: string, headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? '').length)));
  const pad = (cell: string, i: number) => (align[i] === 'r' ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!));
  const line = (cells: readonly string[]) => `| ${cells.map(pad).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (align[i] === 'r' ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(headers), rule, ...rows.map(line)].join('\n');
}
