/**
 * The batcher's observable events: every batch is published on one
 * node:diagnostics_channel channel, so that any metrics library (prom-client,
 * OpenTelemetry) can observe it without the package depending on one.
 */
import * as diagnosticsChannel from 'node:diagnostics_channel';

/** The channel's name: `diagnostics_channel.subscribe(BATCH_CHANNEL, (event) => ...)`. */
export const BATCH_CHANNEL = 'moe-kernels:batch';

/** One message per batch, published after its forward settled, once its requests' continuations have run (in the same turn). */
export interface BatchEvent {
  /** Rows computed for the requests (the forward's T before any padding). */
  tokens: number;
  /** Rows the forward ran: tokens plus padding up to a captured CUDA-graph size. */
  paddedTokens: number;
  /** Requests in the batch (including ones aborted while it ran). */
  requests: number;
  /** Routed experts that received at least one token (-1 when not measured). */
  expertsHit: number;
  /** Time the batch's requests waited in the queue, ms: mean and max. */
  queueMs: number;
  maxQueueMs: number;
  /** Wall time of the forward, ms. */
  computeMs: number;
  /** Whether the forward ran as a CUDA-graph replay. */
  graph: boolean;
  /** Whether the forward failed (its requests then ran one by one, each failing alone). */
  failed: boolean;
}

export const batchChannel = diagnosticsChannel.channel(BATCH_CHANNEL);
