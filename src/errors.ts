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
