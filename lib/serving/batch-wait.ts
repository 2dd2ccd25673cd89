/**
 * How long an idle batcher holds a request back for company. A fixed wait
 * makes a lone client pay it on every request; the adaptive default waits
 * only while requests have recently been arriving much faster than a forward
 * takes, and then no longer than about two arrival gaps (at most half a
 * forward): the company it waits for is company that has been coming.
 */
export class BatchWait {
  private lastArrival = -Infinity;
  private gapMs = Infinity; // moving average of the time between submits
  private computeMs = 0; // moving average of a batch's forward

  /** `fixedMs`: a fixed wait (0: never wait); undefined: adaptive. */
  constructor(private readonly fixedMs: number | undefined) {}

  arrived(now: number): void {
    const gap = now - this.lastArrival;
    this.lastArrival = now;
    if (!Number.isFinite(gap)) return;
    this.gapMs = Number.isFinite(this.gapMs) ? 0.8 * this.gapMs + 0.2 * gap : gap;
  }

  computed(ms: number): void {
    this.computeMs = this.computeMs === 0 ? ms : 0.8 * this.computeMs + 0.2 * ms;
  }

  /** The wait, ms, still owed to a batch whose oldest request arrived `ageMs` ago (0: go now). */
  remaining(ageMs: number): number {
    return Math.max(0, this.target() - ageMs);
  }

  /** The current target wait from a batch's first request, ms. */
  target(): number {
    if (this.fixedMs !== undefined) return this.fixedMs;
    // Arrivals slower than a quarter of a forward: a batch of one now beats waiting.
    if (!(this.gapMs * 4 < this.computeMs)) return 0;
    return Math.min(2 * this.gapMs, this.computeMs / 2);
  }
}
