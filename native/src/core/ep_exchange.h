// The exchange steps that make the layer forward (core/moe_forward.cpp)
// expert-parallel: each rank holds a contiguous slice of the experts and its
// own batch of tokens. After routing, each token goes at most once to each
// rank that holds any of its experts, as fp8 rows with their 1x128 scales and
// its local expert ids and weights (dispatch); the destination reduces a
// token's local experts and returns one bf16 row per (token, rank); the source
// adds the returned rows in rank order (combine). Every step is collective
// and is taken by every rank, failed or not, so that an error on one rank is
// reported on all of them instead of leaving the others waiting.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/backend.h"
#include "core/exec_context.h"
#include "core/ops.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/transport.h"

namespace moe {

// Memory that grows on demand and is reused: the exchange buffers are sized
// by the first forward and grow only when a larger batch comes. Host memory,
// or a queued device's (`device`) for what that device's kernels read.
class GrowableBuffer {
 public:
  GrowableBuffer() = default;
  GrowableBuffer(const GrowableBuffer&) = delete;
  GrowableBuffer& operator=(const GrowableBuffer&) = delete;
  ~GrowableBuffer();
  // At least `bytes` (64-byte aligned); contents are not kept when it grows.
  Status reserve(size_t bytes, Backend* device = nullptr);
  void* data() const { return data_; }
  size_t capacity() const { return capacity_; }
  // After a failed exchange MPI may still write here: never freed.
  void abandon() { abandoned_ = true; }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
  bool abandoned_ = false;
  Backend* device_ = nullptr;  // where data_ was allocated (nullptr: the host)
};

// One rank's place in an expert-parallel layer and the buffers its forwards
// reuse. Forwards on one transport run one at a time (`serial`).
struct EpShard {
  std::shared_ptr<Transport> transport;
  int64_t numExperts = 0;       // E (all ranks)
  int64_t firstExpert = 0;      // this rank's experts are [firstExpert, firstExpert + numLocal)
  int64_t numLocalExperts = 0;  // E / size

  // [Ns] records sent (destination-major, token order within a destination)
  // and [Nr] received (source-major), one per (token, destination rank): the
  // dispatch payload moves in a single all-to-all-v (see recordBytes).
  GrowableBuffer sendRecords;   // [Ns, recordBytes] u8
  GrowableBuffer recvRecords;   // [Nr, recordBytes] u8
  // The received records unpacked (the batch the experts read):
  GrowableBuffer recvXq;        // [Nr, H] fp8
  GrowableBuffer recvScales;    // [Nr, ceil(H/128)] f32
  GrowableBuffer recvIds;       // [Nr, k] i32: local expert ids on this rank, -1 elsewhere
  GrowableBuffer recvWeights;   // [Nr, k] f32: the routing weights of those slots, 0 elsewhere
  // The received batch's workspace (R = Nr * k rows at most):
  GrowableBuffer tokensPerExpert;  // [El] i32
  GrowableBuffer offsets;          // [El + 1] i32
  GrowableBuffer rowToken;         // [R] i32
  GrowableBuffer groupIndex;       // [R] i32
  GrowableBuffer slotRow;          // [Nr, k] i32
  GrowableBuffer xq, xqScales;     // [R, H] fp8, [R, ceil(H/128)] f32 (gathered rows; unfused path only)
  GrowableBuffer h;                // [R, 2I] bf16 (unfused path only)
  GrowableBuffer hq, hqScales;     // [R, I] fp8, [R, ceil(I/128)] f32
  GrowableBuffer y;                // [R, H] bf16
  GrowableBuffer partial;          // [Nr, H] bf16: one reduced row per received token (combine's send)
  GrowableBuffer returned;         // [Ns, H] bf16: one row per (token, rank) sent (combine's receive)
  GrowableBuffer returnSlot;       // [T, size] i32: the row of `returned` for (token, rank), -1 where none
  GrowableBuffer ones;             // [T, size] f32: 1.0 (combine's weights for the returned rows)
  // A queued device (a GPU) whose layer this is, else nullptr. Without a
  // device transport its tensors are staged through the host buffers above
  // (the exchanges run on host memory over MPI): the tokens, ids and weights
  // come back once after routing, the received rows go to the device, the
  // reduced rows come back.
  Backend* device = nullptr;
  // Exchanges between devices (NCCL; ep/nccl_transport.h), when every rank
  // could join one at initExpertParallel: then a device layer's rows move
  // from device buffers to device buffers. Only the routing (ids, weights)
  // comes to the host, to plan the exchange; the received ids, weights and
  // scales are copied back to be checked before any kernel reads them.
  std::shared_ptr<Transport> deviceTransport;
  GrowableBuffer sendToken, sendIds, sendWeights;               // [Ns] i32, [Ns, k] i32, [Ns, k] f32 (host, device path)
  GrowableBuffer dSendToken, dSendXq, dSendScales, dSendIds, dSendWeights;  // the same and the gathered [Ns, H] fp8, [Ns, G] f32 on the device
  GrowableBuffer tokenXq, tokenScales, tokenIds, tokenWeights;  // [T, ...] host copies of the routed tokens
  GrowableBuffer dRecvXq, dRecvScales, dRecvIds, dRecvWeights;  // the received rows on the device
  GrowableBuffer dPartial, dReturned, dReturnSlot, dOnes;        // partial, returned, returnSlot, ones on the device
  int32_t flagWords[8] = {0};                                     // a host copy of the forward's device verdicts
  std::vector<int64_t> sendRows, sendOffsets, recvRows, recvOffsets;        // [size] each, in rows
  std::vector<int64_t> combineSendRows, combineSendOffsets;                 // = recv*, the reverse direction
  std::vector<int64_t> combineRecvRows, combineRecvOffsets;                 // = send*

  // What the last forward moved and how long it took (benchmarks).
  struct Stats {
    double dispatchSeconds = 0;          // packing, counts, agreement, the record exchange, unpacking and checks
    double dispatchExchangeSeconds = 0;  // the record exchange alone (one all-to-all-v)
    double dispatchSyncSeconds = 0;      // the counts exchange and the agreement (includes waiting for the last rank to arrive)
    double combineSeconds = 0;           // agreement and the row exchange back
    double combineExchangeSeconds = 0;   // the row exchange back alone
    int64_t rowsSent = 0, rowsReceived = 0;  // Ns, Nr
    int64_t dispatchRowBytes = 0;        // bytes per dispatched record (recordBytes: fp8 row, scales, ids, weights)
    int64_t combineRowBytes = 0;         // bytes per returned row (bf16)
    int64_t activeExperts = 0;           // this rank's experts that received rows (host layers)
    bool deviceRows = false;             // the rows moved between devices (NCCL), not through the host
  } last;

  // Set when an exchange failed: the buffers above may still be written by
  // the transport, so they are never freed (GrowableBuffer::abandon).
  void abandonBuffers();
};

// One dispatch record, fixed for a layer: the token's fp8 row (H bytes), its
// 1x128 scales (ceil(H/128) f32), the destination's local expert ids of its k
// slots (k i32, -1 where the slot's expert is elsewhere) and their weights
// (k f32, 0 there), packed back to back without padding.
inline size_t recordBytes(int64_t hidden, int64_t topK) {
  return static_cast<size_t>(hidden) + sizeof(float) * static_cast<size_t>(ceilDiv(hidden, kQuantGroup)) +
         (sizeof(int32_t) + sizeof(float)) * static_cast<size_t>(topK);
}

// The received batch: the tokens other ranks sent here, for this rank's experts.
struct EpBatch {
  int64_t tokens = 0;        // Nr
  TensorView xq, xqScales;   // [Nr, H] fp8, [Nr, ceil(H/128)] f32
  TensorView ids, weights;   // [Nr, k] i32 (local expert ids, -1 elsewhere), [Nr, k] f32
};

// The exchange steps of one forward, in the order the forward takes them.
class EpExchange {
 public:
  // `ctx`: the forward's, for the device path's row gathers (may be null
  // where there is no device).
  EpExchange(EpShard& shard, int64_t tokens, int64_t hidden, int64_t topK, ExecContext* ctx = nullptr);

  // Step 1 (dispatch). `local` is this rank's status so far (routing,
  // quantization); on failure the rank sends nothing and every rank returns
  // the error (the others as kEpPeer). ids, weights: [T, k] (global expert
  // ids); xq, xqScales: [T, H] fp8, [T, ceil(H/128)] f32, the tokens
  // quantized once. On success `batch()` holds what this rank received, and
  // receivedStatus() says whether it passed its checks (a failure there is
  // this rank's status for combine, so that every rank still takes it).
  // On a queued device, `flags` is the forward's verdict words: read (after
  // the device finished) into this rank's status before anything is sent.
  Status dispatch(const Status& local, const TensorView& ids, const TensorView& weights, const TensorView& xq,
                  const TensorView& xqScales, const TensorView& flags = TensorView());
  const EpBatch& batch() const { return batch_; }
  const Status& receivedStatus() const { return receivedStatus_; }

  // The received batch's workspace views for `intermediate` (I) and the expert path.
  Status reserveWorkspace(int64_t intermediate, bool gatherRows, int64_t align);
  TensorView tensor(GrowableBuffer& buffer, DType dtype, std::initializer_list<int64_t> dims) const;

  // Step 2 (combine). `local` is this rank's status after its experts ran
  // on the batch and reduced it into partial() ([Nr, H] bf16). On success
  // returned() ([Ns, H] bf16), returnSlot() ([T, size] i32) and ones()
  // ([T, size] f32) are combine's y, slotRow and weights for the final sum.
  Status combine(const Status& local, const TensorView& flags = TensorView());
  TensorView partial() const;
  TensorView returned() const;
  TensorView returnSlot() const;
  TensorView ones() const;

  EpShard& shard() { return shard_; }

 private:
  Status plan(const TensorView& ids, const TensorView& weights, const TensorView& xq, const TensorView& xqScales);
  Status exchangeCounts();
  // Every rank's status, gathered; the first failure (in rank order) becomes
  // this rank's: its own error as is, another rank's as kEpPeer.
  Status agree(const Status& local, const char* step);
  void unpackReceived();
  Status validateReceived();
  // A queued device: waits for it, then its verdict words' error, if any.
  Status deviceVerdict(const TensorView& flags);
  // Host views of the routed tokens (copies from a queued device).
  Status stageTokens(const TensorView& ids, const TensorView& weights, const TensorView& xq, const TensorView& xqScales,
                     TensorView* hIds, TensorView* hWeights, TensorView* hXq, TensorView* hXqScales);
  // Copies `bytes` of a host buffer into a device buffer (grown as needed).
  Status toDevice(GrowableBuffer& deviceBuffer, const GrowableBuffer& host, size_t bytes);
  Status fail(Status status);
  // The device path (deviceRows_): the rows for each destination gathered on
  // the device, and the exchange of rows, scales, ids and weights.
  Status exchangeOnDevice();
  Status checkOnHost();

  EpShard& shard_;
  ExecContext* ctx_;
  bool deviceRows_;  // shard_.device and shard_.deviceTransport
  int rank_, size_;
  int64_t tokens_, hidden_, groups_, topK_;
  size_t record_;  // recordBytes(H, k)
  int64_t sent_ = 0, received_ = 0;  // Ns, Nr
  std::unique_lock<std::mutex> serial_;
  EpBatch batch_;
  Status receivedStatus_;
  TensorView tokenXq_, tokenScales_;  // the device path: the quantized tokens on the device, [T, H] fp8, [T, G] f32
};

}  // namespace moe
