#include "core/ep_exchange.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/ops.h"

namespace moe {

namespace {

constexpr uint32_t kCountsMagic = 0x4d6f4550;  // "PEoM"

// What rank s tells rank d before a dispatch (one per destination).
struct CountsRecord {
  uint32_t magic;
  uint32_t reserved;
  uint64_t forward;  // the transport's forward number: equal on every rank
  int64_t rows;      // rows s sends to d
  int64_t tokens;    // s's batch size (rows <= tokens: a token goes at most once to a rank)
};
static_assert(sizeof(CountsRecord) == 32, "CountsRecord is a wire format");

// A rank's status in an agreement round.
struct StatusRecord {
  int32_t code;  // moe::Code
  char message[252];
};
static_assert(sizeof(StatusRecord) == 256, "StatusRecord is a wire format");

std::string str(int64_t v) { return std::to_string(v); }

double seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

GrowableBuffer::~GrowableBuffer() {
  if (abandoned_ || data_ == nullptr) return;
  if (device_) (void)device_->free(data_);
  else std::free(data_);
}

Status GrowableBuffer::reserve(size_t bytes, Backend* device) {
  if (bytes <= capacity_ && device == device_) return Status::ok();
  if (abandoned_) return Status(Code::kEpTransport, "expert parallelism: the exchange buffers were abandoned after a failed exchange");
  size_t grown = capacity_ && device == device_ ? capacity_ : 4096;
  while (grown < bytes) grown *= 2;
  void* fresh = nullptr;
  if (device) {
    MOE_RETURN_IF_ERROR(device->alloc(grown, &fresh));
  } else if (posix_memalign(&fresh, 64, grown) != 0) {
    return Status(Code::kInternal, "expert parallelism: cannot allocate " + str(static_cast<int64_t>(grown)) + " bytes");
  }
  if (data_) {
    if (device_) (void)device_->free(data_);
    else std::free(data_);
  }
  data_ = fresh;
  capacity_ = grown;
  device_ = device;
  return Status::ok();
}

void EpShard::abandonBuffers() {
  for (GrowableBuffer* b : {&sendRecords, &recvRecords, &partial, &returned, &dSendXq, &dSendScales, &dSendIds, &dSendWeights, &dRecvXq,
                            &dRecvScales, &dRecvIds, &dRecvWeights, &dPartial, &dReturned}) {
    b->abandon();
  }
}

EpExchange::EpExchange(EpShard& shard, int64_t tokens, int64_t hidden, int64_t topK, ExecContext* ctx)
    : shard_(shard),
      ctx_(ctx),
      deviceRows_(shard.device != nullptr && shard.deviceTransport != nullptr && ctx != nullptr),
      rank_(shard.transport->rank()),
      size_(shard.transport->size()),
      tokens_(tokens),
      hidden_(hidden),
      groups_(ceilDiv(hidden, kQuantGroup)),
      topK_(topK),
      record_(recordBytes(hidden, topK)),
      serial_(shard.transport->serial) {}

// A view of one of the received batch's workspace buffers (on the device when the layer is).
TensorView EpExchange::tensor(GrowableBuffer& buffer, DType dtype, std::initializer_list<int64_t> dims) const {
  TensorView t = TensorView::contiguous(buffer.data(), dtype, dims);
  if (shard_.device) t.device = Device::kCuda;
  return t;
}

Status EpExchange::fail(Status status) {
  if (status.code() == Code::kEpTimeout || status.code() == Code::kEpTransport) shard_.abandonBuffers();
  return status;
}

// Packs the rows for each destination: token t goes to rank d iff one of its
// slots holds an expert of d; the row carries all k slots, with the experts
// of d as local ids and the others as -1 (weight 0).
Status EpExchange::plan(const TensorView& ids, const TensorView& weights, const TensorView& xq, const TensorView& xqScales) {
  const int64_t local = shard_.numLocalExperts;
  const int32_t* id = tokens_ ? ids.as<const int32_t>() : nullptr;  // [T, k]
  shard_.sendRows.assign(size_, 0);
  shard_.sendOffsets.assign(size_, 0);
  MOE_RETURN_IF_ERROR(shard_.returnSlot.reserve(sizeof(int32_t) * tokens_ * size_ + 64));
  MOE_RETURN_IF_ERROR(shard_.ones.reserve(sizeof(float) * tokens_ * size_ + 64));
  int32_t* slot = static_cast<int32_t*>(shard_.returnSlot.data());  // [T, size]
  float* ones = static_cast<float*>(shard_.ones.data());             // [T, size]
  for (int64_t t = 0; t < tokens_; ++t) {
    for (int d = 0; d < size_; ++d) slot[t * size_ + d] = -1;
    for (int64_t j = 0; j < topK_; ++j) {
      const int32_t e = id[t * topK_ + j];
      if (e < 0) continue;
      if (e >= shard_.numExperts) return Status(Code::kRange, "expert parallelism: ids[" + str(t) + ", " + str(j) + "] = " + str(e) + " is not an expert");
      slot[t * size_ + e / local] = 0;  // marked; numbered below
    }
    for (int d = 0; d < size_; ++d) {
      ones[t * size_ + d] = 1.0f;
      if (slot[t * size_ + d] == 0) ++shard_.sendRows[d];
    }
  }
  int64_t total = 0;
  for (int d = 0; d < size_; ++d) {
    shard_.sendOffsets[d] = total;
    total += shard_.sendRows[d];
  }
  sent_ = total;
  if (deviceRows_) {  // the rows are gathered on the device: here only which token each is, and its slots
    MOE_RETURN_IF_ERROR(shard_.sendToken.reserve(sizeof(int32_t) * total + 64));
    MOE_RETURN_IF_ERROR(shard_.sendIds.reserve(sizeof(int32_t) * total * topK_ + 64));
    MOE_RETURN_IF_ERROR(shard_.sendWeights.reserve(sizeof(float) * total * topK_ + 64));
  } else {
    MOE_RETURN_IF_ERROR(shard_.sendRecords.reserve(static_cast<size_t>(total) * record_ + 64));
  }
  uint8_t* records = static_cast<uint8_t*>(shard_.sendRecords.data());  // [Ns, recordBytes]
  const uint8_t* x = tokens_ ? xq.as<const uint8_t>() : nullptr;        // [T, H] fp8
  const float* xs = tokens_ ? xqScales.as<const float>() : nullptr;     // [T, G] f32
  const float* w = tokens_ ? weights.as<const float>() : nullptr;       // [T, k] f32
  const size_t rowBytes = static_cast<size_t>(hidden_), scaleBytes = sizeof(float) * static_cast<size_t>(groups_);
  const size_t slotBytes = sizeof(int32_t) * static_cast<size_t>(topK_);
  std::vector<int32_t> recordIds(static_cast<size_t>(topK_));   // [k] one record's ids
  std::vector<float> recordWeights(static_cast<size_t>(topK_)); // [k] one record's weights
  std::vector<int64_t> next(shard_.sendOffsets);
  for (int d = 0; d < size_; ++d) {
    const int64_t first = d * local, last = first + local;
    for (int64_t t = 0; t < tokens_; ++t) {
      if (slot[t * size_ + d] < 0) continue;
      const int64_t r = next[d]++;
      slot[t * size_ + d] = static_cast<int32_t>(r);
      for (int64_t j = 0; j < topK_; ++j) {
        const int32_t e = id[t * topK_ + j];
        const bool mine = e >= first && e < last;
        recordIds[j] = mine ? static_cast<int32_t>(e - first) : -1;
        recordWeights[j] = mine ? w[t * topK_ + j] : 0.0f;
      }
      if (deviceRows_) {
        static_cast<int32_t*>(shard_.sendToken.data())[r] = static_cast<int32_t>(t);                             // [Ns]
        std::memcpy(static_cast<int32_t*>(shard_.sendIds.data()) + r * topK_, recordIds.data(), slotBytes);      // [Ns, k]
        std::memcpy(static_cast<float*>(shard_.sendWeights.data()) + r * topK_, recordWeights.data(), slotBytes); // [Ns, k]
        continue;
      }
      // The record (layout: see recordBytes in ep_exchange.h); memcpy: its fields are not aligned.
      uint8_t* out = records + static_cast<size_t>(r) * record_;
      std::memcpy(out, x + t * hidden_, rowBytes);
      std::memcpy(out + rowBytes, xs + t * groups_, scaleBytes);
      std::memcpy(out + rowBytes + scaleBytes, recordIds.data(), slotBytes);
      std::memcpy(out + rowBytes + scaleBytes + slotBytes, recordWeights.data(), slotBytes);
    }
  }
  return Status::ok();
}

Status EpExchange::agree(const Status& local, const char* step) {
  StatusRecord mine{};
  mine.code = static_cast<int32_t>(local.code());
  std::strncpy(mine.message, local.message().c_str(), sizeof mine.message - 1);
  std::vector<StatusRecord> all(size_);
  MOE_RETURN_IF_ERROR(fail(shard_.transport->allgather(&mine, all.data(), sizeof mine)));
  if (!local.isOk()) return local;
  for (int r = 0; r < size_; ++r) {
    if (all[r].code == 0) continue;
    all[r].message[sizeof all[r].message - 1] = 0;
    const Code code = all[r].code > 0 && all[r].code <= static_cast<int32_t>(Code::kEpTransport) ? static_cast<Code>(all[r].code) : Code::kInternal;
    return Status(Code::kEpPeer, std::string("expert parallelism: rank ") + str(r) + " failed the " + step + " of this forward with " +
                                     codeName(code) + ": " + all[r].message);
  }
  return Status::ok();
}

Status EpExchange::exchangeCounts() {
  const uint64_t forward = shard_.transport->forwards;
  std::vector<CountsRecord> out(size_), in(size_);
  for (int d = 0; d < size_; ++d) out[d] = CountsRecord{kCountsMagic, 0, forward, shard_.sendRows[d], tokens_};
  MOE_RETURN_IF_ERROR(fail(shard_.transport->alltoall(out.data(), in.data(), sizeof(CountsRecord))));
  // Checked before any count is used: a corrupt count is an error, not an overrun.
  Status status;
  shard_.recvRows.assign(size_, 0);
  shard_.recvOffsets.assign(size_, 0);
  int64_t total = 0;
  constexpr int64_t kMaxRows = (int64_t{1} << 31) - 1;
  for (int s = 0; s < size_ && status.isOk(); ++s) {
    const CountsRecord& c = in[s];
    if (c.magic != kCountsMagic) {
      status = Status(Code::kEpProtocol, "expert parallelism: the counts from rank " + str(s) + " have a bad header (magic " + str(c.magic) + ")");
    } else if (c.forward != forward) {
      status = Status(Code::kEpProtocol, "expert parallelism: rank " + str(s) + " is at forward " + str(static_cast<int64_t>(c.forward)) +
                                             ", this rank at " + str(static_cast<int64_t>(forward)) + " (the ranks are out of step)");
    } else if (c.tokens < 0 || c.tokens > kMaxRows || c.rows < 0 || c.rows > c.tokens) {
      status = Status(Code::kEpProtocol, "expert parallelism: rank " + str(s) + " announces " + str(c.rows) + " rows of a " + str(c.tokens) +
                                             "-token batch (a token goes at most once to a rank)");
    } else if (total + c.rows > kMaxRows / topK_) {
      status = Status(Code::kEpProtocol, "expert parallelism: more than " + str(kMaxRows / topK_) + " rows would arrive at rank " + str(rank_));
    } else {
      shard_.recvRows[s] = c.rows;
      shard_.recvOffsets[s] = total;
      total += c.rows;
    }
  }
  received_ = status.isOk() ? total : 0;
  return status;
}

Status EpExchange::deviceVerdict(const TensorView& flags) {
  Backend* device = shard_.device;
  if (device == nullptr) return Status::ok();
  if (flags.data != nullptr) MOE_RETURN_IF_ERROR(device->copyToHost(shard_.flagWords, flags.data, sizeof shard_.flagWords));
  MOE_RETURN_IF_ERROR(device->synchronize());
  return flags.data != nullptr ? device->flagsStatus(shard_.flagWords, "MoeLayer.forward: ") : Status::ok();
}

Status EpExchange::stageTokens(const TensorView& ids, const TensorView& weights, const TensorView& xq, const TensorView& xqScales,
                               TensorView* hIds, TensorView* hWeights, TensorView* hXq, TensorView* hXqScales) {
  *hIds = ids, *hWeights = weights, *hXq = xq, *hXqScales = xqScales;
  Backend* device = shard_.device;
  if (device == nullptr || tokens_ == 0) return Status::ok();
  const std::pair<const TensorView*, std::pair<GrowableBuffer*, TensorView*>> copies[] = {
      {&ids, {&shard_.tokenIds, hIds}}, {&weights, {&shard_.tokenWeights, hWeights}},
      {&xq, {&shard_.tokenXq, hXq}}, {&xqScales, {&shard_.tokenScales, hXqScales}}};
  for (const auto& [from, to] : copies) {
    if (deviceRows_ && from == &xq) break;  // the rows stay on the device (exchangeOnDevice)
    const size_t bytes = static_cast<size_t>(from->numel()) * dtypeSize(from->dtype);
    MOE_RETURN_IF_ERROR(to.first->reserve(bytes + 64));
    MOE_RETURN_IF_ERROR(device->copyToHost(to.first->data(), from->data, bytes));
    *to.second = TensorView::contiguous(to.first->data(), from->dtype, {from->dim(0), from->dim(1)});
  }
  return device->synchronize();
}

Status EpExchange::toDevice(GrowableBuffer& deviceBuffer, const GrowableBuffer& host, size_t bytes) {
  MOE_RETURN_IF_ERROR(deviceBuffer.reserve(bytes + 64, shard_.device));
  return bytes ? shard_.device->copyToDevice(deviceBuffer.data(), host.data(), bytes) : Status::ok();
}

Status EpExchange::dispatch(const Status& local, const TensorView& ids, const TensorView& weights, const TensorView& xq,
                            const TensorView& xqScales, const TensorView& flags) {
  ++shard_.transport->forwards;
  const double start = seconds();
  Status status = local;
  if (status.isOk()) status = deviceVerdict(flags);
  TensorView hIds, hWeights, hXq, hXqScales;  // the routed tokens on the host
  if (status.isOk()) status = stageTokens(ids, weights, xq, xqScales, &hIds, &hWeights, &hXq, &hXqScales);
  if (status.isOk()) status = plan(hIds, hWeights, hXq, hXqScales);
  if (!status.isOk()) {
    shard_.sendRows.assign(size_, 0);
    sent_ = 0;
  }
  // The counts go out even from a failed rank (it sends nothing): the
  // agreement that follows tells every rank about the failure.
  const double syncStart = seconds();
  const Status counts = exchangeCounts();
  if (counts.code() == Code::kEpTimeout || counts.code() == Code::kEpTransport) return counts;
  if (status.isOk()) status = counts;
  if (status.isOk() && deviceRows_) {
    Backend* d = shard_.device;
    status = shard_.dRecvXq.reserve(received_ * hidden_ + 64, d);
    if (status.isOk()) status = shard_.dRecvScales.reserve(sizeof(float) * received_ * groups_ + 64, d);
    if (status.isOk()) status = shard_.dRecvIds.reserve(sizeof(int32_t) * received_ * topK_ + 64, d);
    if (status.isOk()) status = shard_.dRecvWeights.reserve(sizeof(float) * received_ * topK_ + 64, d);
  } else if (status.isOk()) {
    status = shard_.recvRecords.reserve(static_cast<size_t>(received_) * record_ + 64);
    if (status.isOk()) status = shard_.recvXq.reserve(received_ * hidden_ + 64);
  }
  if (status.isOk()) {
    status = shard_.recvScales.reserve(sizeof(float) * received_ * groups_ + 64);
    if (status.isOk()) status = shard_.recvIds.reserve(sizeof(int32_t) * received_ * topK_ + 64);
    if (status.isOk()) status = shard_.recvWeights.reserve(sizeof(float) * received_ * topK_ + 64);
  }
  MOE_RETURN_IF_ERROR(agree(status, "dispatch"));

  EpShard::Stats& stats = shard_.last;
  stats.dispatchSyncSeconds = seconds() - syncStart;
  stats.deviceRows = deviceRows_;
  if (deviceRows_) {
    tokenXq_ = xq, tokenScales_ = xqScales;
    MOE_RETURN_IF_ERROR(fail(exchangeOnDevice()));
  } else {
    const int64_t* sr = shard_.sendRows.data();
    const int64_t* so = shard_.sendOffsets.data();
    const int64_t* rr = shard_.recvRows.data();
    const int64_t* ro = shard_.recvOffsets.data();
    // The payload in one all-to-all-v: one record per (token, destination).
    const RowExchange records{shard_.sendRecords.data(), shard_.recvRecords.data(), record_, sr, so, rr, ro};
    const double exchangeStart = seconds();
    MOE_RETURN_IF_ERROR(fail(shard_.transport->alltoallv(&records, 1)));
    stats.dispatchExchangeSeconds = seconds() - exchangeStart;
    unpackReceived();
  }
  stats.rowsSent = sent_;
  stats.rowsReceived = received_;
  stats.dispatchRowBytes = static_cast<int64_t>(record_);
  stats.combineRowBytes = 2 * hidden_;
  stats.activeExperts = 0;  // counted once the experts ran (moe_forward.cpp)
  batch_.tokens = received_;
  batch_.xq = tensor(shard_.recvXq, DType::kFP8E4M3, {received_, hidden_});
  batch_.xqScales = tensor(shard_.recvScales, DType::kF32, {received_, groups_});
  batch_.ids = tensor(shard_.recvIds, DType::kI32, {received_, topK_});
  batch_.weights = tensor(shard_.recvWeights, DType::kF32, {received_, topK_});
  receivedStatus_ = deviceRows_ ? checkOnHost() : validateReceived();
  if (receivedStatus_.isOk() && shard_.device) {
    // The received rows go to the device, where this rank's experts are (or are there already).
    const size_t n = static_cast<size_t>(received_);
    if (!deviceRows_) receivedStatus_ = toDevice(shard_.dRecvXq, shard_.recvXq, n * hidden_);
    if (receivedStatus_.isOk() && !deviceRows_) receivedStatus_ = toDevice(shard_.dRecvScales, shard_.recvScales, n * sizeof(float) * groups_);
    if (receivedStatus_.isOk() && !deviceRows_) receivedStatus_ = toDevice(shard_.dRecvIds, shard_.recvIds, n * sizeof(int32_t) * topK_);
    if (receivedStatus_.isOk() && !deviceRows_) receivedStatus_ = toDevice(shard_.dRecvWeights, shard_.recvWeights, n * sizeof(float) * topK_);
    const auto onDevice = [](TensorView t, void* data) {
      t.data = data;
      t.device = Device::kCuda;
      return t;
    };
    batch_.xq = onDevice(batch_.xq, shard_.dRecvXq.data());
    batch_.xqScales = onDevice(batch_.xqScales, shard_.dRecvScales.data());
    batch_.ids = onDevice(batch_.ids, shard_.dRecvIds.data());
    batch_.weights = onDevice(batch_.weights, shard_.dRecvWeights.data());
  }
  stats.dispatchSeconds = seconds() - start;
  return Status::ok();
}

// The device path's dispatch: the rows for each destination gathered from
// the quantized tokens on the device (in send order), then rows, scales,
// slot ids and slot weights exchanged between devices in one group, landing
// where this rank's experts read them.
Status EpExchange::exchangeOnDevice() {
  Backend& device = *shard_.device;
  const int64_t n = sent_;
  MOE_RETURN_IF_ERROR(toDevice(shard_.dSendToken, shard_.sendToken, sizeof(int32_t) * n));
  MOE_RETURN_IF_ERROR(toDevice(shard_.dSendIds, shard_.sendIds, sizeof(int32_t) * n * topK_));
  MOE_RETURN_IF_ERROR(toDevice(shard_.dSendWeights, shard_.sendWeights, sizeof(float) * n * topK_));
  MOE_RETURN_IF_ERROR(shard_.dSendXq.reserve(n * hidden_ + 64, &device));
  MOE_RETURN_IF_ERROR(shard_.dSendScales.reserve(sizeof(float) * n * groups_ + 64, &device));
  if (n > 0) {
    // Unquantized dispatch copies rows bit for bit: the fp8 rows go as bf16
    // pairs (H is a multiple of 16), the scales as f32 rows.
    DispatchArgs gather;
    gather.rowToken = tensor(shard_.dSendToken, DType::kI32, {n});
    gather.x = TensorView::contiguous(tokenXq_.data, DType::kBF16, {tokens_, hidden_ / 2});
    gather.x.device = Device::kCuda;
    gather.out = tensor(shard_.dSendXq, DType::kBF16, {n, hidden_ / 2});
    MOE_RETURN_IF_ERROR(device.dispatch(gather, *ctx_));
    gather.x = tokenScales_;
    gather.out = tensor(shard_.dSendScales, DType::kF32, {n, groups_});
    MOE_RETURN_IF_ERROR(device.dispatch(gather, *ctx_));
  }
  const int64_t* sr = shard_.sendRows.data();
  const int64_t* so = shard_.sendOffsets.data();
  const int64_t* rr = shard_.recvRows.data();
  const int64_t* ro = shard_.recvOffsets.data();
  const size_t slotBytes = sizeof(int32_t) * static_cast<size_t>(topK_);
  const RowExchange rows[4] = {
      {shard_.dSendXq.data(), shard_.dRecvXq.data(), static_cast<size_t>(hidden_), sr, so, rr, ro},
      {shard_.dSendScales.data(), shard_.dRecvScales.data(), sizeof(float) * static_cast<size_t>(groups_), sr, so, rr, ro},
      {shard_.dSendIds.data(), shard_.dRecvIds.data(), slotBytes, sr, so, rr, ro},
      {shard_.dSendWeights.data(), shard_.dRecvWeights.data(), slotBytes, sr, so, rr, ro},
  };
  const double start = seconds();
  MOE_RETURN_IF_ERROR(shard_.deviceTransport->alltoallv(rows, 4));
  shard_.last.dispatchExchangeSeconds = seconds() - start;
  return Status::ok();
}

// The device path's received ids, weights and scales, copied to the host and
// checked there (validateReceived) before any kernel indexes with them.
Status EpExchange::checkOnHost() {
  Backend& device = *shard_.device;
  const size_t n = static_cast<size_t>(received_);
  if (n > 0) {
    MOE_RETURN_IF_ERROR(device.copyToHost(shard_.recvIds.data(), shard_.dRecvIds.data(), n * sizeof(int32_t) * topK_));
    MOE_RETURN_IF_ERROR(device.copyToHost(shard_.recvWeights.data(), shard_.dRecvWeights.data(), n * sizeof(float) * topK_));
    MOE_RETURN_IF_ERROR(device.copyToHost(shard_.recvScales.data(), shard_.dRecvScales.data(), n * sizeof(float) * groups_));
    MOE_RETURN_IF_ERROR(device.synchronize());
  }
  return validateReceived();
}

// The received records split into the batch's [Nr, ...] tensors (the layout
// the experts read). Only copies: the checks follow in validateReceived().
void EpExchange::unpackReceived() {
  const uint8_t* records = static_cast<const uint8_t*>(shard_.recvRecords.data());  // [Nr, recordBytes]
  uint8_t* rx = static_cast<uint8_t*>(shard_.recvXq.data());                        // [Nr, H] fp8
  uint8_t* rs = static_cast<uint8_t*>(shard_.recvScales.data());                    // [Nr, G] f32
  uint8_t* ri = static_cast<uint8_t*>(shard_.recvIds.data());                       // [Nr, k] i32
  uint8_t* rw = static_cast<uint8_t*>(shard_.recvWeights.data());                   // [Nr, k] f32
  const size_t rowBytes = static_cast<size_t>(hidden_), scaleBytes = sizeof(float) * static_cast<size_t>(groups_);
  const size_t slotBytes = sizeof(int32_t) * static_cast<size_t>(topK_);
  for (size_t r = 0; r < static_cast<size_t>(received_); ++r) {
    const uint8_t* in = records + r * record_;
    std::memcpy(rx + r * rowBytes, in, rowBytes);
    std::memcpy(rs + r * scaleBytes, in + rowBytes, scaleBytes);
    std::memcpy(ri + r * slotBytes, in + rowBytes + scaleBytes, slotBytes);
    std::memcpy(rw + r * slotBytes, in + rowBytes + scaleBytes + slotBytes, slotBytes);
  }
}

// The received ids and weights are data from another process: checked before
// they index anything. (A failure here is reported to every rank at combine's
// agreement.)
Status EpExchange::validateReceived() {
  const int32_t* id = batch_.ids.as<const int32_t>();
  const float* w = batch_.weights.as<const float>();
  const float* s = batch_.xqScales.as<const float>();
  for (int64_t r = 0; r < received_; ++r) {
    bool any = false;
    for (int64_t j = 0; j < topK_; ++j) {
      const int32_t e = id[r * topK_ + j];
      if (e < -1 || e >= shard_.numLocalExperts || !std::isfinite(w[r * topK_ + j])) {
        return Status(Code::kEpProtocol, "expert parallelism: received row " + str(r) + " slot " + str(j) + " holds expert " + str(e) +
                                             " (this rank holds " + str(shard_.numLocalExperts) + ") or a non-finite weight");
      }
      any = any || e >= 0;
    }
    if (!any) return Status(Code::kEpProtocol, "expert parallelism: received row " + str(r) + " names none of this rank's experts");
    for (int64_t g = 0; g < groups_; ++g) {
      const float scale = s[r * groups_ + g];
      if (!(scale > 0.0f) || !std::isfinite(scale)) {
        return Status(Code::kEpProtocol, "expert parallelism: received row " + str(r) + " has a bad scale in group " + str(g));
      }
    }
  }
  return Status::ok();
}

Status EpExchange::reserveWorkspace(int64_t intermediate, bool gatherRows, int64_t align) {
  // The layout's rows: R = Nr * k plus each expert's alignment padding.
  const int64_t el = shard_.numLocalExperts, rows = received_ * topK_ + el * (align - 1);
  Backend* d = shard_.device;
  const int64_t ig = ceilDiv(intermediate, kQuantGroup);
  MOE_RETURN_IF_ERROR(shard_.tokensPerExpert.reserve(sizeof(int32_t) * el + 64, d));
  MOE_RETURN_IF_ERROR(shard_.offsets.reserve(sizeof(int32_t) * (el + 1) + 64, d));
  MOE_RETURN_IF_ERROR(shard_.rowToken.reserve(sizeof(int32_t) * rows + 64, d));
  MOE_RETURN_IF_ERROR(shard_.groupIndex.reserve(sizeof(int32_t) * rows + 64, d));
  MOE_RETURN_IF_ERROR(shard_.slotRow.reserve(sizeof(int32_t) * rows + 64, d));
  if (gatherRows) {
    MOE_RETURN_IF_ERROR(shard_.xq.reserve(rows * hidden_ + 64, d));
    MOE_RETURN_IF_ERROR(shard_.xqScales.reserve(sizeof(float) * rows * groups_ + 64, d));
    MOE_RETURN_IF_ERROR(shard_.h.reserve(2 * sizeof(uint16_t) * rows * intermediate + 64, d));
  }
  MOE_RETURN_IF_ERROR(shard_.hq.reserve(rows * intermediate + 64, d));
  MOE_RETURN_IF_ERROR(shard_.hqScales.reserve(sizeof(float) * rows * ig + 64, d));
  MOE_RETURN_IF_ERROR(shard_.y.reserve(sizeof(uint16_t) * rows * hidden_ + 64, d));
  MOE_RETURN_IF_ERROR(shard_.partial.reserve(sizeof(uint16_t) * received_ * hidden_ + 64));
  MOE_RETURN_IF_ERROR(shard_.returned.reserve(sizeof(uint16_t) * sent_ * hidden_ + 64));
  if (d) MOE_RETURN_IF_ERROR(shard_.dPartial.reserve(sizeof(uint16_t) * received_ * hidden_ + 64, d));
  if (deviceRows_) MOE_RETURN_IF_ERROR(shard_.dReturned.reserve(sizeof(uint16_t) * sent_ * hidden_ + 64, d));
  return Status::ok();
}

namespace {
// A view of `buffer`, on the device when there is one.
TensorView view(const GrowableBuffer& host, const GrowableBuffer& device, bool onDevice, DType dtype, int64_t rows, int64_t cols) {
  TensorView t = TensorView::contiguous(onDevice ? device.data() : host.data(), dtype, {rows, cols});
  if (onDevice) t.device = Device::kCuda;
  return t;
}
}  // namespace

TensorView EpExchange::partial() const { return view(shard_.partial, shard_.dPartial, shard_.device, DType::kBF16, received_, hidden_); }
TensorView EpExchange::returned() const { return view(shard_.returned, shard_.dReturned, shard_.device, DType::kBF16, sent_, hidden_); }
TensorView EpExchange::returnSlot() const { return view(shard_.returnSlot, shard_.dReturnSlot, shard_.device, DType::kI32, tokens_, size_); }
TensorView EpExchange::ones() const { return view(shard_.ones, shard_.dOnes, shard_.device, DType::kF32, tokens_, size_); }

Status EpExchange::combine(const Status& local, const TensorView& flags) {
  const double start = seconds();
  Status status = local;
  // A device's reduced rows (and its verdicts on the experts' ops) come back first.
  if (status.isOk() && shard_.device && !deviceRows_ && received_ > 0) {
    status = shard_.device->copyToHost(shard_.partial.data(), shard_.dPartial.data(), sizeof(uint16_t) * received_ * hidden_);
  }
  if (status.isOk()) status = deviceVerdict(flags);
  MOE_RETURN_IF_ERROR(agree(status, "experts"));
  // The reverse of dispatch: the received rows go back where they came from.
  // (On the device path, from the device's partial rows into its returned rows.)
  const RowExchange back{deviceRows_ ? shard_.dPartial.data() : shard_.partial.data(),
                         deviceRows_ ? shard_.dReturned.data() : shard_.returned.data(), sizeof(uint16_t) * static_cast<size_t>(hidden_),
                         shard_.recvRows.data(), shard_.recvOffsets.data(), shard_.sendRows.data(), shard_.sendOffsets.data()};
  const double exchangeStart = seconds();
  MOE_RETURN_IF_ERROR(fail((deviceRows_ ? shard_.deviceTransport : shard_.transport)->alltoallv(&back, 1)));
  shard_.last.combineExchangeSeconds = seconds() - exchangeStart;
  if (shard_.device && tokens_ > 0) {
    if (!deviceRows_) MOE_RETURN_IF_ERROR(toDevice(shard_.dReturned, shard_.returned, sizeof(uint16_t) * sent_ * hidden_));
    MOE_RETURN_IF_ERROR(toDevice(shard_.dReturnSlot, shard_.returnSlot, sizeof(int32_t) * tokens_ * size_));
    MOE_RETURN_IF_ERROR(toDevice(shard_.dOnes, shard_.ones, sizeof(float) * tokens_ * size_));
  }
  shard_.last.combineSeconds = seconds() - start;
  return Status::ok();
}

}  // namespace moe
