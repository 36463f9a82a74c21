import { createProgram } from '../../src/cli/program.ts';

export interface CliRun {
  stdout: string;
  stderr: string;
  /** What the program threw (main.ts turns it into the exit code); undefined on success. */
  error?: unknown;
}

/** Runs `rowfleet <args>` in-process with captured output and the given environment. */
export async function rowfleet(env: Record<string, string>, ...args: string[]): Promise<CliRun> {
  return rowfleetWith({ env }, ...args);
}

/** The same, as on a terminal (`isTTY`) or stopped by a signal (`shutdownSignal`). */
export async function rowfleetWith(
  io: { env: Record<string, string>; isTTY?: boolean; shutdownSignal?: AbortSignal; onStdout?: (text: string) => void },
  ...args: string[]
): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const program = createProgram({
    stdout: {
      write: (text: string) => {
        stdout += text;
        io.onStdout?.(text);
      },
    },
    stderr: { write: (text: string) => (stderr += text) },
    env: io.env,
    jsonLogs: true,
    ...(io.isTTY !== undefined && { isTTY: io.isTTY }),
    ...(io.shutdownSignal !== undefined && { shutdownSignal: io.shutdownSignal }),
  });
  try {
    await program.parseAsync(['node', 'rowfleet', ...args]);
    return { stdout, stderr };
  } catch (error) {
    return { stdout, stderr, error };
  }
}
