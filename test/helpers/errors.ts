import { expect } from 'vitest';
import { MoeError } from '../../lib/index';

/** Asserts that `call` throws a MoeError with `code` (and a message matching `message`). */
export function expectMoeError(call: () => unknown, code: string, message?: RegExp): void {
  let thrown: unknown;
  try {
    call();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, `expected a MoeError ${code}`).toBeInstanceOf(MoeError);
  expect((thrown as MoeError).code, (thrown as Error).message).toBe(code);
  if (message) expect((thrown as MoeError).message).toMatch(message);
}
