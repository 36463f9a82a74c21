-- Deletes (issue 11): a deleted record stays as a tombstone in status DELETED, with its version,
-- so that a late message at that version or older is refused and cannot bring the record back;
-- the `deleted` event records it (src/records/delete.ts). No function changes: the upsert's
-- classification against the stored version, and its return to COMPLETED of anything not being
-- processed, already give a tombstone its meaning.
-- The new checks are looser than the old ones, so every existing row passes; adding them reads
-- records and event_log once, inside the migration's transaction.
ALTER TABLE "rowfleet"."event_log" DROP CONSTRAINT "event_log_reason_check";--> statement-breakpoint
ALTER TABLE "rowfleet"."records" DROP CONSTRAINT "records_status_check";--> statement-breakpoint
CREATE INDEX "records_deleted_idx" ON "rowfleet"."records" USING btree ("id") WHERE "rowfleet"."records"."status" = 'DELETED';--> statement-breakpoint
ALTER TABLE "rowfleet"."event_log" ADD CONSTRAINT "event_log_reason_check" CHECK ("rowfleet"."event_log"."reason" in ('applied', 'stale', 'duplicate', 'conflict', 'retried', 'failed', 'requeued', 'rescued', 'replayed', 'deleted'));--> statement-breakpoint
ALTER TABLE "rowfleet"."records" ADD CONSTRAINT "records_status_check" CHECK ("rowfleet"."records"."status" in ('COMPLETED', 'PROCESSING', 'PROCESSED', 'FAILED', 'DELETED'));
