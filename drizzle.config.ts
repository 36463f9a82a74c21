import { defineConfig } from 'drizzle-kit';

// Generation only needs the schema; `rowfleet migrate` applies the files at run time.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './drizzle',
  schemaFilter: ['rowfleet'],
});
