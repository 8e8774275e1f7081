// A small typed event emitter: listeners never break the emitter (a throwing listener is
// reported on the `listenerError` hook and the others still run).

/** Listener signatures by event name. */
export type EventMap = Record<string, (...args: never[]) => void>;

/** A typed emitter. `on` returns a function that removes the listener. */
export class Emitter<E extends EventMap> {
  #listeners = new Map<keyof E, Set<E[keyof E]>>();

  /** Called with an error a listener threw (default: `console.error`). */
  listenerError: (e: unknown) => void = (e) => console.error('fanfare: a listener threw', e);

  /** Adds a listener; the returned function removes it. */
  on<K extends keyof E>(event: K, fn: E[K]): () => void {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(fn);
    return () => this.off(event, fn);
  }

  /** Removes a listener. */
  off<K extends keyof E>(event: K, fn: E[K]): void {
    this.#listeners.get(event)?.delete(fn);
  }

  /** Calls every listener of `event`. */
  protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        (fn as (...a: Parameters<E[K]>) => void)(...args);
      } catch (e) {
        this.listenerError(e);
      }
    }
  }

  /** Whether `event` has listeners. */
  protected listens<K extends keyof E>(event: K): boolean {
    return (this.#listeners.get(event)?.size ?? 0) > 0;
  }
}
