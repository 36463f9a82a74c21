/**
 * Errors meant for a person: one line saying what failed and what to do. The CLI prints the
 * message without a stack and exits with `exitCode`; the HTTP layer never sees these.
 *
 * Exit codes: 0 success, 1 failure at run time, 2 usage or configuration error.
 */
export class UserError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1, options?: ErrorOptions) {
    super(message, options);
    this.name = 'UserError';
    this.exitCode = exitCode;
  }
}

/** Bad flags, environment or arguments: exit code 2. */
export class UsageError extends UserError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 2, options);
    this.name = 'UsageError';
  }
}

/**
 * The database is not ready for this rowfleet: `rowfleet migrate` has not run on it, or not since
 * rowfleet was upgraded. Raised by the CLI when a statement meets a missing rowfleet (or pg-boss)
 * table, and the schema turns out to be behind: a missing table in a current schema is a bug.
 */
export class SchemaNotReadyError extends UserError {
  readonly state: SchemaState;
  constructor(state: SchemaState, options?: ErrorOptions) {
    super(`${describeSchemaState(state)}; run \`rowfleet migrate\` first`, 1, options);
    this.name = 'SchemaNotReadyError';
    this.state = state;
  }
}

/** What `rowfleet migrate` would fix: no rowfleet schema, migrations pending, or no pg-boss. */
export type SchemaState = { kind: 'missing' } | { kind: 'behind'; pending: number } | { kind: 'no-boss'; schema: string };

function describeSchemaState(state: SchemaState): string {
  switch (state.kind) {
    case 'missing':
      return 'the database has no rowfleet schema';
    case 'behind':
      return `the database's rowfleet schema is ${state.pending} migration(s) behind this rowfleet`;
    case 'no-boss':
      return `pg-boss is not installed in schema "${state.schema}"`;
  }
}
