/** Backoff and retry windows (docs/operations.md, "Retry windows": connection failures retried for retry.connectionMinutes, others for retry.otherMinutes). */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** 200 ms, 400 ms, … capped at 10 s, with ±20 % jitter. */
export function backoff(attempt: number, baseMs = 200, capMs = 10_000): number {
  const ms = Math.min(capMs, baseMs * 2 ** Math.min(attempt - 1, 16));
  return Math.round(ms * (0.8 + Math.random() * 0.4));
}
