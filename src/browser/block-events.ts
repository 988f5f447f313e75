/** What live subscribers hear about each accepted block. */
export interface BlockEvent {
  readonly node: string
  readonly height: number
  readonly logSize: number
  readonly logRoot: string
  readonly leafCount: number
  readonly time: string
}

type Listener = (event: BlockEvent) => void

/** Fan-out of accepted blocks to the live streams; a listener that throws does not stop the others. */
export class BlockEvents {
  readonly #listeners = new Set<Listener>()

  get size(): number {
    return this.#listeners.size
  }

  /** Returns the unsubscribe function. */
  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  publish(event: BlockEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event)
      } catch {
        this.#listeners.delete(listener)
      }
    }
  }
}
