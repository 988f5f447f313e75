/** Limits of one SQL statement, shared by the node's and the browser's batched writes. */

/** SQLite allows 32,766 bound parameters per statement; stay below with room to spare. */
export const parametersPerStatementMax = 30_000
/**
 * Bytes of values per statement. PostgreSQL holds the rows of json_populate_recordset in work_mem (4 MiB by
 * default) and spills them to a temporary file beyond it: a block of sealed leaves written as one statement
 * took twice as long. MySQL refuses a statement larger than its max_allowed_packet (16 MiB by default).
 */
export const statementBytesMax = 1024 * 1024

/** What a row's values weigh in a statement, roughly: their characters or bytes. */
function rowBytes(row: object): number {
  let bytes = 0
  for (const value of Object.values(row)) {
    if (typeof value === 'string') bytes += value.length
    else if (value instanceof Uint8Array) bytes += value.length * 2
    else bytes += 20
  }
  return bytes
}

/** Rows cut into statements that fit both the parameter and the size limit; each holds at least one row. */
export function statementChunks<T extends object>(rows: readonly T[], parametersPerRow: number): T[][] {
  const rowsPerStatement = Math.max(1, Math.floor(parametersPerStatementMax / parametersPerRow))
  const chunks: T[][] = []
  let chunk: T[] = []
  let bytes = 0
  for (const row of rows) {
    const weight = rowBytes(row)
    if (chunk.length > 0 && (chunk.length === rowsPerStatement || bytes + weight > statementBytesMax)) {
      chunks.push(chunk)
      chunk = []
      bytes = 0
    }
    chunk.push(row)
    bytes += weight
  }
  if (chunk.length > 0) chunks.push(chunk)
  return chunks
}
