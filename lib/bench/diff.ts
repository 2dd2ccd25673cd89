/** DeepGEMM's calc_diff: 1 - 2*sum(x*y) / sum(x*x + y*y), accumulated in float64. */
export function calcDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let xy = 0;
  let xxyy = 0;
  for (let i = 0; i < x.length; i++) {
    xy += x[i] * y[i];
    xxyy += x[i] * x[i] + y[i] * y[i];
  }
  return xxyy === 0 ? 0 : 1 - (2 * xy) / xxyy;
}
