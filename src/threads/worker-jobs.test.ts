import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Worker } from 'node:worker_threads'
import { utf8 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import type { HashedBlock } from '../verifier/block-hashing.js'
import { WorkerJobs } from './worker-jobs.js'

const hashingThread = () => new Worker(new URL('../verifier/block-hashing-worker.js', import.meta.url))

test('jobs are answered by id; a job that cannot be sent fails alone; a crashed thread is replaced for the next job', async () => {
  const jobs = new WorkerJobs<unknown, HashedBlock>('test thread', hashingThread, 2)
  try {
    const answers = await Promise.all([jobs.run(utf8('one')), jobs.run(utf8('two'))])
    assert.deepEqual(
      answers.map((answer) => Buffer.from(answer.bytes).toString()),
      ['one', 'two'],
    )
    await assert.rejects(
      jobs.run(() => 'a function cannot be copied'),
      /could not be cloned/,
    )
    assert.equal(jobs.pending, 0)

    const held = jobs.run(utf8('held')).then(
      () => 'answered',
      (error) => (error instanceof VmError && error.code === 'internal' ? 'failed' : String(error)),
    )
    await jobs.crashOne()
    const outcome = await held
    // The job either finished before the crash or failed with it; either way nothing is left waiting.
    assert.ok(outcome === 'answered' || outcome === 'failed', outcome)
    assert.equal(jobs.pending, 0)
    assert.equal(Buffer.from((await jobs.run(utf8('after'))).bytes).toString(), 'after')
  } finally {
    await jobs.close()
  }
  await assert.rejects(jobs.run(utf8('closed')), /is closed/)
})
