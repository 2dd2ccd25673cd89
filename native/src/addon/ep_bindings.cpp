#include "addon/ep_bindings.h"

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "addon/errors.h"
#include "addon/js_tensor.h"
#include "addon/op_runner.h"
#include "core/moe_forward.h"
#include "ep/mpi_transport.h"
#include "ep/nccl_transport.h"

namespace moe::addon {

namespace {

Napi::Value throwStatus(Napi::Env env, const Status& status) { return failOp(env, false, status); }

double number(const Napi::Object& o, const char* key, double fallback) {
  const Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

// The NCCL communicator of all ranks, once epNcclInit made one.
std::mutex ncclMutex;
std::shared_ptr<ep::NcclTransport> ncclWorld;

EpShard* shardArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsExternal()) return nullptr;
  return info[i].As<Napi::External<EpShard>>().Data();
}

}  // namespace

// epLoad(candidates) -> { available, reason, path?, library? }
Napi::Value EpLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<std::string> candidates = stringsFromJs(info[0]);
  ep::MpiPlugin& plugin = ep::MpiPlugin::instance();
  plugin.load(candidates);
  Napi::Object result = Napi::Object::New(env);
  result.Set("available", plugin.available());
  result.Set("reason", plugin.reason());
  if (!plugin.path().empty()) result.Set("path", plugin.path());
  return result;
}

// epInit({ timeoutMs }) -> { rank, size, threadLevel, library }
Napi::Value EpInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double timeoutMs = info.Length() > 0 && info[0].IsObject() ? number(info[0].As<Napi::Object>(), "timeoutMs", 60000) : 60000;
  int rank = -1, size = 0, level = -1;
  const Status status = ep::initWorld(timeoutMs / 1e3, &rank, &size, &level);
  if (!status.isOk()) return throwStatus(env, status);
  Napi::Object result = Napi::Object::New(env);
  result.Set("rank", rank);
  result.Set("size", size);
  result.Set("threadLevel", level);
  result.Set("library", std::string(ep::MpiPlugin::instance().api()->library_version()));
  return result;
}

Napi::Value EpFinalize(const Napi::CallbackInfo& info) {
  const Status status = ep::finalizeWorld();
  if (!status.isOk()) return throwStatus(info.Env(), status);
  return info.Env().Undefined();
}

// epCreateShard({ numExperts, firstExpert, numLocalExperts }) -> External<EpShard>
Napi::Value EpCreateShard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ep::MpiTransport> transport = ep::worldTransport();
  if (!transport) return throwStatus(env, Status(Code::kEpTransport, "expert parallelism: call initExpertParallel() first"));
  if (info.Length() < 1 || !info[0].IsObject()) return throwStatus(env, Status(Code::kInternal, "epCreateShard(options)"));
  const Napi::Object o = info[0].As<Napi::Object>();
  auto* shard = new EpShard();
  shard->transport = transport;
  shard->numExperts = static_cast<int64_t>(number(o, "numExperts", 0));
  shard->firstExpert = static_cast<int64_t>(number(o, "firstExpert", 0));
  shard->numLocalExperts = static_cast<int64_t>(number(o, "numLocalExperts", 0));
  {
    // A device layer's rows move over NCCL where every rank joined it.
    std::lock_guard<std::mutex> lock(ncclMutex);
    shard->deviceTransport = ncclWorld;
  }
  if (shard->numLocalExperts < 1 || shard->numLocalExperts * transport->size() != shard->numExperts ||
      shard->firstExpert != shard->numLocalExperts * transport->rank()) {
    delete shard;
    return throwStatus(env, Status(Code::kEpConfig, "expert parallelism: a shard must hold experts [rank * E / size, (rank + 1) * E / size)"));
  }
  return Napi::External<EpShard>::New(env, shard, [](Napi::Env, EpShard* s) { delete s; });
}

// epFailForward(shard, code, message, hidden, topK): takes the forward's
// first collective step with `message` as this rank's error, so that the
// other ranks fail too instead of waiting. Returns the error the step ended
// with (the given one, or a transport failure) as { code, message }.
Napi::Value EpFailForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EpShard* shard = shardArg(info, 0);
  if (!shard || info.Length() < 5) return throwStatus(env, Status(Code::kInternal, "epFailForward(shard, code, message, hidden, topK)"));
  const std::string code = info[1].ToString().Utf8Value();
  Code c = Code::kInternal;
  for (int i = 1; i <= static_cast<int>(Code::kEpTransport); ++i) {
    if (code == codeName(static_cast<Code>(i))) c = static_cast<Code>(i);
  }
  const Status error(c, info[2].ToString().Utf8Value());
  const Status status = epFailForward(*shard, error, info[3].As<Napi::Number>().Int64Value(), info[4].As<Napi::Number>().Int64Value());
  Napi::Object result = Napi::Object::New(env);
  result.Set("code", codeName(status.code()));
  result.Set("message", status.message());
  return result;
}

// epAllgather(bytes: Uint8Array) -> Uint8Array [size * bytes.length], rank order.
Napi::Value EpAllgather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ep::MpiTransport> transport = ep::worldTransport();
  if (!transport) return throwStatus(env, Status(Code::kEpTransport, "expert parallelism: call initExpertParallel() first"));
  if (info.Length() < 1 || !info[0].IsTypedArray()) return throwStatus(env, Status(Code::kInternal, "epAllgather(Uint8Array)"));
  Napi::Uint8Array in = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array out = Napi::Uint8Array::New(env, in.ByteLength() * transport->size());
  std::lock_guard<std::mutex> lock(transport->serial);
  const Status status = transport->allgather(in.Data(), out.Data(), in.ByteLength());
  if (!status.isOk()) return throwStatus(env, status);
  return out;
}

Napi::Value EpBarrier(const Napi::CallbackInfo& info) {
  std::shared_ptr<ep::MpiTransport> transport = ep::worldTransport();
  if (!transport) return throwStatus(info.Env(), Status(Code::kEpTransport, "expert parallelism: call initExpertParallel() first"));
  std::lock_guard<std::mutex> lock(transport->serial);
  const Status status = transport->barrier();
  if (!status.isOk()) return throwStatus(info.Env(), status);
  return info.Env().Undefined();
}

// epShardStats(shard) -> what its last forward moved (EpShard::Stats) and the per-rank row counts.
Napi::Value EpShardStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EpShard* shard = shardArg(info, 0);
  if (!shard) return throwStatus(env, Status(Code::kInternal, "epShardStats(shard)"));
  const EpShard::Stats& s = shard->last;
  Napi::Object o = Napi::Object::New(env);
  o.Set("dispatchSeconds", s.dispatchSeconds);
  o.Set("dispatchExchangeSeconds", s.dispatchExchangeSeconds);
  o.Set("dispatchSyncSeconds", s.dispatchSyncSeconds);
  o.Set("combineSeconds", s.combineSeconds);
  o.Set("combineExchangeSeconds", s.combineExchangeSeconds);
  o.Set("rowsSent", static_cast<double>(s.rowsSent));
  o.Set("rowsReceived", static_cast<double>(s.rowsReceived));
  o.Set("dispatchRowBytes", static_cast<double>(s.dispatchRowBytes));
  o.Set("combineRowBytes", static_cast<double>(s.combineRowBytes));
  o.Set("activeExperts", static_cast<double>(s.activeExperts));
  o.Set("deviceRows", s.deviceRows);
  Napi::Array sent = Napi::Array::New(env), received = Napi::Array::New(env);
  for (size_t i = 0; i < shard->sendRows.size(); ++i) sent.Set(i, static_cast<double>(shard->sendRows[i]));
  for (size_t i = 0; i < shard->recvRows.size(); ++i) received.Set(i, static_cast<double>(shard->recvRows[i]));
  o.Set("sendRows", sent);
  o.Set("recvRows", received);
  return o;
}

// epExchangeAb(shard, { reverse, reps }) -> { raw: Float64Array, ours: Float64Array }
// [reps] seconds each: the last forward's dispatch (reverse: combine) row
// exchange timed as a blocking MPI_Alltoallv (the ceiling) and as the
// transport's own exchange, interleaved (A B, then B A, ...) on the same
// buffers (the shard's, as the forward left them) with the same counts and
// record size, each started from a barrier. Collective. The benchmark takes
// the slowest rank's time per rep and the median over reps.
Napi::Value EpExchangeAb(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EpShard* shard = shardArg(info, 0);
  if (!shard || info.Length() < 2 || !info[1].IsObject()) return throwStatus(env, Status(Code::kInternal, "epExchangeAb(shard, options)"));
  const Napi::Object o = info[1].As<Napi::Object>();
  const bool reverse = o.Get("reverse").ToBoolean().Value();
  const int reps = static_cast<int>(number(o, "reps", 1));
  if (reps < 1 || reps > 100000) return throwStatus(env, Status(Code::kRange, "epExchangeAb: reps must be 1..100000"));
  auto* transport = static_cast<ep::MpiTransport*>(shard->transport.get());
  if (shard->last.deviceRows || shard->last.dispatchRowBytes <= 0) {
    return throwStatus(env, Status(Code::kEpTransport, "epExchangeAb: needs a host layer that ran a forward"));
  }
  // Exactly what the forward's exchange moved: records out of sendRecords
  // into recvRecords, or rows back from partial into returned.
  const size_t rowBytes = static_cast<size_t>(reverse ? shard->last.combineRowBytes : shard->last.dispatchRowBytes);
  const RowExchange x = reverse ? RowExchange{shard->partial.data(), shard->returned.data(), rowBytes, shard->recvRows.data(),
                                              shard->recvOffsets.data(), shard->sendRows.data(), shard->sendOffsets.data()}
                                : RowExchange{shard->sendRecords.data(), shard->recvRecords.data(), rowBytes, shard->sendRows.data(),
                                              shard->sendOffsets.data(), shard->recvRows.data(), shard->recvOffsets.data()};
  Napi::Float64Array raw = Napi::Float64Array::New(env, reps), ours = Napi::Float64Array::New(env, reps);
  std::lock_guard<std::mutex> lock(transport->serial);
  const auto now = [] { return std::chrono::steady_clock::now(); };
  const auto since = [](std::chrono::steady_clock::time_point t) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count(); };
  Status status = transport->alltoallvBlocking(x);  // both paths warmed once
  if (status.isOk()) status = transport->alltoallv(&x, 1);
  for (int i = 0; i < reps && status.isOk(); ++i) {
    for (int half = 0; half < 2 && status.isOk(); ++half) {
      const bool rawTurn = (half == 0) == (i % 2 == 0);
      status = transport->barrier();
      if (!status.isOk()) break;
      const auto t0 = now();
      status = rawTurn ? transport->alltoallvBlocking(x) : transport->alltoallv(&x, 1);
      (rawTurn ? raw : ours)[i] = since(t0);
    }
  }
  if (!status.isOk()) return throwStatus(env, status);
  Napi::Object result = Napi::Object::New(env);
  result.Set("raw", raw);
  result.Set("ours", ours);
  return result;
}

// epNcclProbe() -> { available, reason, version? }: whether libnccl.so.2
// loads and has what the exchange needs (no communicator is made).
Napi::Value EpNcclProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string reason;
  const ep::NcclLibrary* library = ep::NcclLibrary::load(&reason);
  Napi::Object result = Napi::Object::New(env);
  result.Set("available", library != nullptr);
  result.Set("reason", reason);
  if (library) result.Set("version", library->version);
  return result;
}

// epNcclInit() -> { available, reason, version? }: joins the NCCL
// communicator of all ranks (collective over MPI; the unique id is
// broadcast from rank 0). Unavailable (no libnccl.so.2, no CUDA plug-in, a
// rank without either) is a reason, not an error.
Napi::Value EpNcclInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ep::MpiTransport> mpi = ep::worldTransport();
  if (!mpi) return throwStatus(env, Status(Code::kEpTransport, "expert parallelism: call initExpertParallel() first"));
  std::lock_guard<std::mutex> lock(ncclMutex);
  Status status;
  if (!ncclWorld) {
    std::lock_guard<std::mutex> serial(mpi->serial);
    status = ep::NcclTransport::create(mpi, &ncclWorld);
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("available", status.isOk());
  result.Set("reason", status.isOk() ? std::string("usable") : status.message());
  if (status.isOk()) result.Set("version", ncclWorld->ncclVersion());
  if (!status.isOk() && status.code() == Code::kEpTimeout) return throwStatus(env, status);
  return result;
}

// epNcclExchange({ send, recv, rowBytes, sendRows, recvRows }): one row
// exchange of device tensors over NCCL (rows packed per peer in rank order),
// waited for. The device check's two-GPU phase moves known bytes with it.
Napi::Value EpNcclExchange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ep::NcclTransport> transport;
  {
    std::lock_guard<std::mutex> lock(ncclMutex);
    transport = ncclWorld;
  }
  if (!transport) return throwStatus(env, Status(Code::kEpTransport, "epNcclExchange: NCCL is not initialized (epNcclInit)"));
  if (info.Length() < 1 || !info[0].IsObject()) return throwStatus(env, Status(Code::kInternal, "epNcclExchange(args)"));
  const Napi::Object args = info[0].As<Napi::Object>();
  KeepAlive keep;
  keep.setSynchronous(true);
  TensorView send, recv;
  Status status = tensorFromJs(args, "send", "epNcclExchange: send", &send, &keep);
  if (status.isOk()) status = tensorFromJs(args, "recv", "epNcclExchange: recv", &recv, &keep);
  if (status.isOk() && (send.device != Device::kCuda || recv.device != Device::kCuda)) {
    status = Status(Code::kDevice, "epNcclExchange: send and recv must be CUDA tensors");
  }
  int64_t rowBytes = 0;
  if (status.isOk()) status = int64FromJs(args, "rowBytes", "epNcclExchange: rowBytes", 1, 1LL << 30, &rowBytes);
  const int size = transport->size();
  std::vector<int64_t> sendRows(size), recvRows(size), sendOffsets(size), recvOffsets(size);
  int64_t sendTotal = 0, recvTotal = 0;
  for (const char* key : {"sendRows", "recvRows"}) {
    if (!status.isOk()) break;
    const Napi::Value list = args.Get(key);
    if (!list.IsArray() || list.As<Napi::Array>().Length() != static_cast<uint32_t>(size)) {
      status = Status(Code::kShape, std::string("epNcclExchange: ") + key + ": expected one row count per rank");
      break;
    }
    std::vector<int64_t>& rows = std::string(key) == "sendRows" ? sendRows : recvRows;
    std::vector<int64_t>& offsets = std::string(key) == "sendRows" ? sendOffsets : recvOffsets;
    int64_t& total = std::string(key) == "sendRows" ? sendTotal : recvTotal;
    for (int r = 0; r < size; ++r) {
      const double v = list.As<Napi::Array>().Get(r).ToNumber().DoubleValue();
      if (!(v >= 0) || v > (1LL << 31)) {
        status = Status(Code::kRange, std::string("epNcclExchange: ") + key + ": bad row count");
        break;
      }
      rows[r] = static_cast<int64_t>(v);
      offsets[r] = total;
      total += rows[r];
    }
  }
  const auto bytesOf = [](const TensorView& t) { return t.numel() * static_cast<int64_t>(dtypeSize(t.dtype)); };
  if (status.isOk() && (sendTotal * rowBytes > bytesOf(send) || recvTotal * rowBytes > bytesOf(recv))) {
    status = Status(Code::kShape, "epNcclExchange: the rows do not fit the tensors");
  }
  if (status.isOk()) {
    const RowExchange x{send.data, recv.data, static_cast<size_t>(rowBytes), sendRows.data(), sendOffsets.data(), recvRows.data(), recvOffsets.data()};
    std::lock_guard<std::mutex> serial(transport->serial);
    status = transport->alltoallv(&x, 1);
  }
  if (!status.isOk()) return throwStatus(env, status);
  return env.Undefined();
}

Status epShardFromJs(const Napi::Object& args, KeepAlive* keep, EpShard** shard) {
  *shard = nullptr;
  const Napi::Value holder = args.Get("ep");
  if (holder.IsUndefined() || holder.IsNull()) return Status::ok();
  if (!holder.IsObject()) return Status(Code::kInternal, "moeForward: ep: expected { handle }");
  const Napi::Value handle = holder.As<Napi::Object>().Get("handle");
  if (!handle.IsExternal()) return Status(Code::kInternal, "moeForward: ep.handle: expected an External");
  keep->add(holder.As<Napi::Object>());
  *shard = handle.As<Napi::External<EpShard>>().Data();
  return Status::ok();
}

}  // namespace moe::addon
