/**
 * Every operation comes as a Promise-returning function and a ...Sync twin
 * (Node's fs convention). Both validate the same way and produce the same
 * result; the async form runs the kernel on one of the package's own threads (never libuv's pool).
 */
export interface PreparedCall<R> {
  /** Runs the native kernel: now, or on a worker thread behind a Promise. */
  run(async: boolean): void | Promise<void>;
  result: R;
}

export function twin<P extends unknown[], R>(prepare: (...params: P) => PreparedCall<R>) {
  return {
    sync(...params: P): R {
      const call = prepare(...params);
      call.run(false);
      return call.result;
    },
    async async(...params: P): Promise<R> {
      const call = prepare(...params); // a validation error rejects the Promise
      await call.run(true);
      return call.result;
    },
  };
}
