CREATE TABLE "rowfleet"."sweep_state" (
	"queue" text PRIMARY KEY NOT NULL,
	"cursor_run_after" timestamp with time zone,
	"cursor_id" text,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "rowfleet"."records" ADD COLUMN "enqueued_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "records_unenqueued_idx" ON "rowfleet"."records" USING btree ("run_after","id") WHERE "rowfleet"."records"."status" = 'COMPLETED' and "rowfleet"."records"."enqueued_at" is null;