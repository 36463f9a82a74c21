-- One row per minute and connection (server pid): each state change counts itself in its own statement, and no two workers' statements wait on one row.
ALTER TABLE "rowfleet"."stats" DROP CONSTRAINT "stats_pkey";--> statement-breakpoint
ALTER TABLE "rowfleet"."stats" ADD COLUMN "backend" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "rowfleet"."stats" ADD CONSTRAINT "stats_minute_backend_pk" PRIMARY KEY("minute","backend");
