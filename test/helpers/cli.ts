import { createProgram } from '../../src/cli/program.ts';

export interface CliRun {
  stdout: string;
  stderr: string;
  /** What the program threw (main.ts turns it into the exit code); undefined on success. */
  error?: unknown;
}

/** Runs `rowfleet <args>` in-process with captured output and the given environment. */
export async function rowfleet(env: Record<string, string>, ...args: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const program = createProgram({
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    env,
    jsonLogs: true,
  });
  try {
    await program.parseAsync(['node', 'rowfleet', ...args]);
    return { stdout, stderr };
  } catch (error) {
    return { stdout, stderr, error };
  }
}
