CREATE TABLE "rowfleet"."stats" (
	"minute" timestamp with time zone PRIMARY KEY NOT NULL,
	"processed" bigint DEFAULT 0 NOT NULL,
	"failed" bigint DEFAULT 0 NOT NULL,
	"retried" bigint DEFAULT 0 NOT NULL,
	"superseded" bigint DEFAULT 0 NOT NULL,
	"rescued" bigint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
ALTER TABLE "rowfleet"."event_log" DROP CONSTRAINT "event_log_reason_check";--> statement-breakpoint
-- NOT VALID: the new list only adds reasons, so every existing row satisfies it; validating would
-- read the whole event_log under the lock this statement holds.
ALTER TABLE "rowfleet"."event_log" ADD CONSTRAINT "event_log_reason_check" CHECK ("rowfleet"."event_log"."reason" in ('applied', 'stale', 'duplicate', 'conflict', 'retried', 'failed', 'requeued', 'rescued', 'replayed')) NOT VALID;