import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parametersPerStatementMax, statementBytesMax, statementChunks } from './statements.js'

describe('statement chunks', () => {
  test('rows keep their order and each statement stays within the size limit', () => {
    const rows = Array.from({ length: 3_000 }, (_, index) => ({ index, leaf: 'x'.repeat(1_345) }))
    const chunks = statementChunks(rows, 2)
    assert.deepEqual(chunks.flat(), rows)
    assert.ok(chunks.length > 1)
    for (const chunk of chunks) {
      const bytes = chunk.reduce((sum, row) => sum + 20 + row.leaf.length, 0)
      assert.ok(bytes <= statementBytesMax, `${bytes} bytes in one statement`)
    }
  })

  test('each statement stays within the parameter limit', () => {
    const rows = Array.from({ length: 20_000 }, (_, index) => ({ index, a: 1, b: 2 }))
    const chunks = statementChunks(rows, 3)
    assert.deepEqual(chunks.flat(), rows)
    assert.deepEqual(
      chunks.map((chunk) => chunk.length),
      [10_000, 10_000],
    )
    for (const chunk of chunks) assert.ok(chunk.length * 3 <= parametersPerStatementMax)
  })

  test('a row larger than the limit is a statement of its own; nothing is dropped', () => {
    const big = { leaf: 'y'.repeat(statementBytesMax + 1) }
    const chunks = statementChunks([{ leaf: 'a' }, big, { leaf: 'b' }], 1)
    assert.deepEqual(chunks, [[{ leaf: 'a' }], [big], [{ leaf: 'b' }]])
  })

  test('no rows, no statements', () => {
    assert.deepEqual(statementChunks([], 4), [])
  })
})
