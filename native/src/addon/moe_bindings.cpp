// moeForward(args, async): the whole MoE layer in one native call. lib/moe
// builds `args` (weights, workspace views sized for this T, options).
#include "addon/moe_bindings.h"

#include <string>

#include "addon/binding_support.h"
#include "addon/ep_bindings.h"
#include "addon/errors.h"
#include "core/backend.h"
#include "core/moe_forward.h"
#include "cpu/thread_pool.h"

namespace moe::addon {

namespace {

// args[key] = { data: Tensor[], scales: Tensor[] } (absent: empty weights).
Status parseExpertWeights(const Napi::Object& args, const char* key, ExpertWeights* out, KeepAlive* keep) {
  const Napi::Value value = args.Get(key);
  if (value.IsUndefined() || value.IsNull()) return Status::ok();
  const std::string name = std::string("moeForward: ") + key;
  if (!value.IsObject()) return Status(Code::kDtype, name + ": expected { data: Tensor[], scales: Tensor[] }");
  const Napi::Object weights = value.As<Napi::Object>();
  for (const char* part : {"data", "scales"}) {
    const Napi::Value list = weights.Get(part);
    if (!list.IsArray()) return Status(Code::kDtype, name + "." + part + ": expected an array of tensors");
    const Napi::Array shards = list.As<Napi::Array>();
    Napi::Object holder = Napi::Object::New(args.Env());
    for (uint32_t i = 0; i < shards.Length(); ++i) {
      holder.Set("t", shards.Get(i));
      TensorView view;
      const std::string what = name + "." + part + "[" + std::to_string(i) + "]";
      MOE_RETURN_IF_ERROR(tensorFromJs(holder, "t", what.c_str(), &view, keep));
      (std::string(part) == "data" ? out->data : out->scales).push_back(view);
    }
  }
  return Status::ok();
}

Status parseWorkspace(const Napi::Object& args, MoeWorkspace* ws, KeepAlive* keep) {
  const Napi::Value value = args.Get("ws");
  if (!value.IsObject()) return Status(Code::kDtype, "moeForward: ws: expected an object of tensors");
  const Napi::Object w = value.As<Napi::Object>();
  const std::pair<const char*, TensorView*> required[] = {
      {"logits", &ws->logits},   {"ids", &ws->ids},         {"weights", &ws->weights},
      {"tokensPerExpert", &ws->tokensPerExpert}, {"offsets", &ws->offsets}, {"rowToken", &ws->rowToken},
      {"groupIndex", &ws->groupIndex}, {"slotRow", &ws->slotRow}, {"xq", &ws->xq},
      {"xqScales", &ws->xqScales}, {"h", &ws->h}, {"hq", &ws->hq},
      {"hqScales", &ws->hqScales}, {"y", &ws->y},
  };
  for (const auto& [key, view] : required) {
    MOE_RETURN_IF_ERROR(tensorFromJs(w, key, (std::string("moeForward: ws.") + key).c_str(), view, keep));
  }
  const std::pair<const char*, TensorView*> shared[] = {
      {"sharedXq", &ws->sharedXq}, {"sharedXqScales", &ws->sharedXqScales}, {"sharedH", &ws->sharedH},
      {"sharedHq", &ws->sharedHq}, {"sharedHqScales", &ws->sharedHqScales}, {"sharedOut", &ws->sharedOut},
  };
  for (const auto& [key, view] : shared) {
    MOE_RETURN_IF_ERROR(optionalTensorFromJs(w, key, (std::string("moeForward: ws.") + key).c_str(), view, keep));
  }
  return Status::ok();
}

// The parts of moeForward's arguments that stay the same from call to call,
// read once: a layer's weights and routing options (moePrepareWeights) and a
// workspace's views for one token count (moePrepareWorkspace). Reading ~35
// tensors through N-API took ~0.1 ms of a ~0.6 ms decode step here. The
// handles do not own memory: lib/ passes each inside an object that also
// holds the tensors, and that object is what a call keeps alive.
struct PreparedWeights {
  TensorView gate, bias;
  RouteArgs routing;
  ExpertWeights w13, w2, sharedW13, sharedW2;
  bool cpu = false, cuda = false;  // the devices of the tensors
  // Host weights: what a forward reads first (moeForwardFirstReads), for
  // the pool threads that a forward's start wakes (wakeThreads).
  std::vector<cpu::ThreadPool::CacheRange> firstReads;
};

struct PreparedWorkspace {
  MoeWorkspace ws;
  bool cpu = false, cuda = false;
};

void noteDevices(KeepAlive* keep, bool cpu, bool cuda) {
  if (cpu) keep->noteDevice(Device::kCpu);
  if (cuda) keep->noteDevice(Device::kCuda);
}

Status parseWeights(const Napi::Object& args, PreparedWeights* w, KeepAlive* keep) {
  MOE_RETURN_IF_ERROR(tensorFromJs(args, "gate", "moeForward: gate", &w->gate, keep));
  MOE_RETURN_IF_ERROR(optionalTensorFromJs(args, "bias", "moeForward: bias", &w->bias, keep));
  const Napi::Value routing = args.Get("routing");
  if (!routing.IsObject()) return Status(Code::kRange, "moeForward: routing: expected an object");
  MOE_RETURN_IF_ERROR(parseRouteOptions(routing.As<Napi::Object>(), &w->routing));
  MOE_RETURN_IF_ERROR(parseExpertWeights(args, "w13", &w->w13, keep));
  MOE_RETURN_IF_ERROR(parseExpertWeights(args, "w2", &w->w2, keep));
  MOE_RETURN_IF_ERROR(parseExpertWeights(args, "sharedW13", &w->sharedW13, keep));
  return parseExpertWeights(args, "sharedW2", &w->sharedW2, keep);
}

// args[key] = { handle: External<T>, ... } from moePrepare*: the prepared
// part, with the holder object kept alive for the call.
template <typename T>
Status preparedFromJs(const Napi::Object& args, const char* key, KeepAlive* keep, const T** out) {
  const Napi::Value holder = args.Get(key);
  if (!holder.IsObject()) return Status(Code::kInternal, std::string("moeForward: ") + key + ": expected a prepared handle");
  const Napi::Value handle = holder.As<Napi::Object>().Get("handle");
  if (!handle.IsExternal()) return Status(Code::kInternal, std::string("moeForward: ") + key + ".handle: expected an External");
  *out = handle.As<Napi::External<T>>().Data();
  keep->add(holder.As<Napi::Object>());
  noteDevices(keep, (*out)->cpu, (*out)->cuda);
  return Status::ok();
}

// The arguments of moeForward / moeCapture: x, out, `weights` and
// `workspace` (prepared handles), align, stageSeconds, and for a queued
// device `layout` ({ masked, maxRowsPerExpert }) and `flags` (the device
// verdict words, MoeWorkspace::flags).
Status parseForward(Call& call, MoeForwardArgs* args) {
  KeepAlive* keep = call.keep.get();
  MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "x", "moeForward: x", &args->x, keep));
  const PreparedWeights* weights = nullptr;
  MOE_RETURN_IF_ERROR(preparedFromJs(call.args, "weights", keep, &weights));
  args->gate = weights->gate;
  args->bias = weights->bias;
  args->routing = weights->routing;
  args->w13 = weights->w13;
  args->w2 = weights->w2;
  args->sharedW13 = weights->sharedW13;
  args->sharedW2 = weights->sharedW2;
  const PreparedWorkspace* workspace = nullptr;
  MOE_RETURN_IF_ERROR(preparedFromJs(call.args, "workspace", keep, &workspace));
  args->ws = workspace->ws;
  MOE_RETURN_IF_ERROR(int64FromJs(call.args, "align", "moeForward: align", 1, 1 << 16, &args->align));
  MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "out", "moeForward: out", &args->out, keep));
  MOE_RETURN_IF_ERROR(epShardFromJs(call.args, keep, &args->ep));
  const Napi::Value seconds = call.args.Get("stageSeconds");
  if (seconds.IsTypedArray()) {
    Napi::TypedArray array = seconds.As<Napi::TypedArray>();
    if (array.TypedArrayType() != napi_float64_array || array.ElementLength() < kNumStages) {
      return Status(Code::kDtype, "moeForward: stageSeconds: expected a Float64Array of " + std::to_string(kNumStages));
    }
    HostArray host;
    MOE_RETURN_IF_ERROR(hostArrayFromJs(call.env, array, "moeForward: stageSeconds", &host, keep->pinBuffers()));
    keep->add(array);
    if (keep->pinBuffers()) pinArrayBuffer(call.env, host.arrayBuffer);
    args->stageSeconds = static_cast<double*>(host.data);
  }
  if (!call.args.Get("batchInvariant").IsUndefined()) {
    MOE_RETURN_IF_ERROR(boolFromJs(call.args, "batchInvariant", "moeForward: batchInvariant", &args->batchInvariant));
  }
  const Napi::Value layout = call.args.Get("layout");
  if (layout.IsObject()) {
    const Napi::Object options = layout.As<Napi::Object>();
    MOE_RETURN_IF_ERROR(boolFromJs(options, "masked", "moeForward: layout.masked", &args->masked));
    MOE_RETURN_IF_ERROR(int64FromJs(options, "maxRowsPerExpert", "moeForward: layout.maxRowsPerExpert", 0, 1LL << 30,
                                    &args->maxRowsPerExpert));
  }
  return optionalTensorFromJs(call.args, "flags", "moeForward: flags", &args->ws.flags, keep);
}

// A captured forward: the backend's graph, destroyed with its JS handle.
struct CapturedGraph {
  Backend* backend = nullptr;
  Graph* graph = nullptr;
};

}  // namespace

// moePrepareWeights({ gate, bias, routing, w13, w2, sharedW13, sharedW2 })
// and moePrepareWorkspace({ ws }): read once, returned as an External (see
// PreparedWeights). Synchronous; errors are MoeErrors as for moeForward.
template <typename T, typename Parse>
Napi::Value prepare(const Napi::CallbackInfo& info, const char* op, Parse parse) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return failOp(env, false, Status(Code::kInternal, std::string(op) + ": expected (args)"));
  KeepAlive devices;
  devices.setSynchronous(true);  // only the devices are wanted: lib/ holds the tensors
  devices.setPinBuffers(true);   // but later async forwards use their memory
  auto prepared = std::make_unique<T>();
  const Status status = parse(info[0].As<Napi::Object>(), prepared.get(), &devices);
  if (!status.isOk()) return failOp(env, false, status);
  if (devices.mixedDevices()) return failOp(env, false, Status(Code::kDevice, std::string(op) + ": the tensors are on different devices"));
  prepared->cpu = devices.device() == Device::kCpu;
  prepared->cuda = devices.device() == Device::kCuda;
  return Napi::External<T>::New(env, prepared.release(), [](Napi::Env, T* p) { delete p; });
}

Napi::Value MoePrepareWeights(const Napi::CallbackInfo& info) {
  return prepare<PreparedWeights>(info, "moePrepareWeights", [](const Napi::Object& args, PreparedWeights* w, KeepAlive* keep) {
    MOE_RETURN_IF_ERROR(parseWeights(args, w, keep));
    if (keep->device() != Device::kCpu) return Status::ok();
    for (const TensorView& t : moeForwardFirstReads(w->gate, w->bias, w->sharedW13, w->sharedW2)) {
      if (t.data != nullptr && static_cast<int>(w->firstReads.size()) < cpu::ThreadPool::kMaxCacheRanges) {
        w->firstReads.push_back({t.data, static_cast<size_t>(t.numel()) * dtypeSize(t.dtype)});
      }
    }
    return Status::ok();
  });
}

// wakeThreads(weights?): a CPU forward is about to start (ThreadPool::wakeWorkers);
// `weights`, the layer's moePrepareWeights handle: the woken threads read
// the weights the forward reads first into the caches meanwhile.
Napi::Value WakeThreads(const Napi::CallbackInfo& info) {
  const PreparedWeights* weights = info.Length() > 0 && info[0].IsExternal() ? info[0].As<Napi::External<PreparedWeights>>().Data() : nullptr;
  if (weights == nullptr) {
    cpu::ThreadPool::instance().wakeWorkers();
  } else {
    cpu::ThreadPool::instance().wakeWorkers(weights->firstReads.data(), static_cast<int>(weights->firstReads.size()));
  }
  return info.Env().Undefined();
}

Napi::Value MoePrepareWorkspace(const Napi::CallbackInfo& info) {
  return prepare<PreparedWorkspace>(info, "moePrepareWorkspace", [](const Napi::Object& args, PreparedWorkspace* w, KeepAlive* keep) {
    return parseWorkspace(args, &w->ws, keep);
  });
}

Napi::Value MoeForward(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<MoeForwardArgs>();
  return bind(
      info, "moeForward", [&](Call& call) { return parseForward(call, args.get()); },
      [args](Backend& backend, ExecContext& ctx) { return backend.forward(*args, ctx); });
}

// moeCapture(args): records the masked (decode) forward on a queued device
// into a graph and returns its handle; nothing runs. Synchronous.
Napi::Value MoeCapture(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call call{env, Napi::Object(), false};
  MoeForwardArgs args;
  Backend* backend = nullptr;
  Status status = parseCall(info, "moeCapture", &call);
  if (status.isOk()) status = parseForward(call, &args);
  if (status.isOk()) status = selectBackend(*call.keep, "moeCapture", &backend);
  if (status.isOk() && !backend->queued()) status = Status(Code::kDevice, "moeCapture: the tensors must be on a GPU");
  if (status.isOk() && !args.masked) status = Status(Code::kRange, "moeCapture: only the masked (decode) forward can be captured");
  if (!status.isOk()) return failOp(env, false, status);
  status = backend->beginCapture();
  if (!status.isOk()) return failOp(env, false, status);
  ExecContext ctx;
  ctx.async = true;  // recorded, not run: nothing may wait for the device
  status = backend->forward(args, ctx);
  Graph* graph = nullptr;
  const Status ended = backend->endCapture(&graph);  // always leave capture mode
  if (status.isOk()) status = ended;
  if (!status.isOk()) {
    backend->destroyGraph(graph);
    return failOp(env, false, status);
  }
  auto* holder = new CapturedGraph{backend, graph};
  return Napi::External<CapturedGraph>::New(env, holder, [](Napi::Env, CapturedGraph* g) {
    g->backend->destroyGraph(g->graph);
    delete g;
  });
}

// moeReplay(graph, async): one replay of a captured forward on its device's queue.
Napi::Value MoeReplay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool async = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  if (info.Length() < 1 || !info[0].IsExternal()) {
    return failOp(env, async, Status(Code::kInternal, "moeReplay: expected (graph, async)"));
  }
  CapturedGraph* g = info[0].As<Napi::External<CapturedGraph>>().Data();
  auto keep = std::make_unique<KeepAlive>();
  keep->add(info[0].As<Napi::Object>());
  return runOp(env, async, *g->backend, std::move(keep), [g](ExecContext&) { return g->backend->launchGraph(g->graph); });
}

// moeCheckFlags(flags: Int32Array): throws the error the device verdict words
// of a finished GPU forward record (NaN in x, ...), if any.
Napi::Value MoeCheckFlags(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      info[0].As<Napi::TypedArray>().ElementLength() < static_cast<size_t>(kFlagWordsAllocated)) {
    return failOp(env, false, Status(Code::kInternal, "moeCheckFlags: expected an Int32Array of 8"));
  }
  Napi::Int32Array flags = info[0].As<Napi::Int32Array>();
  const Status status = backendFor(Device::kCuda).flagsStatus(flags.Data(), "MoeLayer.forward: ");
  if (!status.isOk()) return failOp(env, false, status);
  return env.Undefined();
}

}  // namespace moe::addon
