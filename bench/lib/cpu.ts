/**
 * Where the CPU goes during a measurement, read from /proc: on a 2-core machine the load
 * generator, the API process and Postgres all compete for the same cores, so a throughput number
 * means little without knowing which of them was saturated.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** Linux's USER_HZ: /proc reports CPU time in these ticks (100 on every mainstream build). */
const TICKS_PER_SECOND = 100;

/** Groups of processes to account for, re-read at both ends of the window (backends come and go). */
export type ProcessGroups = () => Record<string, readonly number[]>;

/**
 * Percent of one core used by each group over a window, plus `irq` (interrupt and softirq time,
 * where loopback TCP is processed), `other` (every other process: a busy neighbour skews the
 * numbers) and `idle`; together they add up to cores x 100.
 */
export type CpuUsage = Record<string, number> & { irq: number; other: number; idle: number };

export interface CpuMeter {
  start(): void;
  stop(): CpuUsage;
}

export function cpuMeter(groups: ProcessGroups): CpuMeter {
  let started: { at: number; ticks: Map<number, number>; machine: MachineTicks } | undefined;
  return {
    start() {
      started = { at: performance.now(), ticks: ticksOf(Object.values(groups()).flat()), machine: machineTicks() };
    },
    stop() {
      if (started === undefined) throw new Error('cpuMeter.stop() before start()');
      const seconds = (performance.now() - started.at) / 1000;
      const usage: Record<string, number> = {};
      let measured = 0;
      for (const [name, pids] of Object.entries(groups())) {
        let ticks = 0;
        // A process born inside the window counts from zero; one that died inside it is lost.
        for (const [pid, now] of ticksOf(pids)) ticks += now - (started.ticks.get(pid) ?? 0);
        usage[name] = Math.round((ticks / TICKS_PER_SECOND / seconds) * 100);
        measured += usage[name];
      }
      const machine = machineTicks();
      const total = machine.total - started.machine.total;
      const capacity = availableParallelism() * 100;
      const share = (ticks: number) => (total > 0 ? Math.round((ticks / total) * capacity) : 0);
      const idle = share(machine.idle - started.machine.idle);
      const irq = share(machine.irq - started.machine.irq);
      return { ...usage, irq, other: Math.max(0, capacity - idle - irq - measured), idle } as CpuUsage;
    },
  };
}

/** utime + stime of each live pid. */
function ticksOf(pids: readonly number[]): Map<number, number> {
  const ticks = new Map<number, number>();
  for (const pid of pids) {
    const fields = statFields(pid);
    if (fields !== undefined) ticks.set(pid, Number(fields[11]) + Number(fields[12]));
  }
  return ticks;
}

/** Fields of /proc/<pid>/stat after `pid (comm)`: [0] is state, [1] ppid, [11] utime, [12] stime. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may hold spaces and parentheses; everything after the last ')' is space-separated.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

interface MachineTicks {
  total: number;
  idle: number;
  irq: number;
}

function machineTicks(): MachineTicks {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already inside user).
  const total = values.slice(0, 8).reduce((a, b) => a + b, 0);
  return { total, idle: (values[3] ?? 0) + (values[4] ?? 0), irq: (values[5] ?? 0) + (values[6] ?? 0) };
}

/** A process and all its children (Postgres: the postmaster and its backends). */
export function processTree(rootPid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const ppid = Number(statFields(Number(entry))?.[1]);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid)!.push(Number(entry));
  }
  const tree: number[] = [];
  const queue = [rootPid];
  while (queue.length > 0) {
    const pid = queue.pop()!;
    tree.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/** Every process whose command name is `name` (for a Postgres we did not start ourselves). */
export function processesNamed(name: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === name) pids.push(Number(entry));
    } catch {
      // The process exited while we listed /proc.
    }
  }
  return pids;
}
