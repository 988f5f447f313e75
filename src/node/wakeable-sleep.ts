/**
 * A sleep that a wake-up ends early, for loops that poll on a timer but should act at once on news (the
 * funnel on new pool rows, a publisher on a new block). A wake-up while awake is kept, so the next
 * sleep returns at once and no news is missed.
 */
export class WakeableSleep {
  #wake: (() => void) | null = null
  #woken = false

  wake(): void {
    this.#woken = true
    this.#wake?.()
  }

  sleep(ms: number): Promise<void> {
    if (this.#woken) {
      this.#woken = false
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.#wake = null
        this.#woken = false
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#wake = done
    })
  }
}
