CREATE SCHEMA IF NOT EXISTS "rowfleet";
--> statement-breakpoint
CREATE SEQUENCE "rowfleet"."version_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1;--> statement-breakpoint
CREATE TABLE "rowfleet"."event_log" (
	"seq" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "rowfleet"."event_log_seq_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"record_id" text NOT NULL,
	"message_id" text,
	"version" bigint,
	"version_assigned" boolean DEFAULT false NOT NULL,
	"data" jsonb,
	"applied" boolean NOT NULL,
	"reason" text NOT NULL,
	"current_version" bigint,
	"detail" jsonb,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "event_log_reason_check" CHECK ("rowfleet"."event_log"."reason" in ('applied', 'stale', 'duplicate', 'conflict', 'failed', 'requeued', 'rescued'))
);
--> statement-breakpoint
CREATE TABLE "rowfleet"."records" (
	"id" text PRIMARY KEY NOT NULL,
	"version" bigint NOT NULL,
	"data" jsonb NOT NULL,
	"status" text DEFAULT 'COMPLETED' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"run_after" timestamp with time zone DEFAULT now() NOT NULL,
	"lease_owner" text,
	"lease_token" uuid,
	"lease_expires_at" timestamp with time zone,
	"lease_expirations" integer DEFAULT 0 NOT NULL,
	"last_error" text,
	"result" jsonb,
	"processed_version" bigint,
	"processed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "records_status_check" CHECK ("rowfleet"."records"."status" in ('COMPLETED', 'PROCESSING', 'PROCESSED', 'FAILED')),
	CONSTRAINT "records_version_positive" CHECK ("rowfleet"."records"."version" > 0),
	CONSTRAINT "records_id_length" CHECK (length("rowfleet"."records"."id") between 1 and 256)
);
--> statement-breakpoint
CREATE UNIQUE INDEX "event_log_message_id_key" ON "rowfleet"."event_log" USING btree ("message_id") WHERE "rowfleet"."event_log"."message_id" is not null;--> statement-breakpoint
CREATE INDEX "event_log_record_idx" ON "rowfleet"."event_log" USING btree ("record_id","seq");--> statement-breakpoint
CREATE INDEX "records_due_idx" ON "rowfleet"."records" USING btree ("run_after","id") WHERE "rowfleet"."records"."status" = 'COMPLETED';--> statement-breakpoint
CREATE INDEX "records_lease_idx" ON "rowfleet"."records" USING btree ("lease_expires_at") WHERE "rowfleet"."records"."status" = 'PROCESSING';--> statement-breakpoint
CREATE INDEX "records_failed_idx" ON "rowfleet"."records" USING btree ("id") WHERE "rowfleet"."records"."status" = 'FAILED';