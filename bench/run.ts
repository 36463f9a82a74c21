/**
 * Runs every bench (or those named: `npm run bench -- upsert`) against one Postgres. A new bench
 * is a module exporting a `Bench` (see bench/lib/harness.ts), added to this list.
 */
import { main, type Bench } from './lib/harness.ts';
import { upsertBench } from './upsert.ts';
import { drainBench } from './drain.ts';
import { drainFreshBench } from './drain-fresh.ts';
import { scalingBench } from './scaling.ts';
import { claimBench } from './claim.ts';
import { wakeupBench } from './wakeup.ts';
import { sweepBench } from './sweep.ts';
import { autoscaleBench } from './autoscale.ts';
import { soakBench } from './soak.ts';
import { everyBench } from './every.ts';
import { dashboardBench } from './dashboard.ts';

const BENCHES: readonly Bench[] = [upsertBench, drainBench, drainFreshBench, scalingBench, claimBench, wakeupBench, sweepBench, autoscaleBench, everyBench, dashboardBench, soakBench];

main(BENCHES);
