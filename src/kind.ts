/**
 * Kind names, checked the same way by the API, the library, the CLI and the schema: `order`,
 * `billing.invoice`. A kind never contains `/`, so `kind/id` names one record unambiguously.
 */
export const KIND_PATTERN = /^[a-z][a-z0-9_.-]{0,62}$/;

/** The kind of every message that names none, and of every record written before kinds. */
export const DEFAULT_KIND = 'default';

/** What a kind name must be, for error messages. */
export const KIND_RULE = 'a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-" (like order or billing.invoice)';
