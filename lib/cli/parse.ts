/** Option parsers shared by the commands. */
import { InvalidArgumentError } from 'commander';

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got '${value}'`);
  return n;
}

export function parseIntList(value: string): number[] {
  return value.split(',').map((part) => parsePositiveInt(part.trim()));
}
