// Expert parallelism's bindings: the MPI transport plug-in (load, init,
// finalize), a rank's shard of a layer, and the small collectives lib/ep
// uses (config digests, benchmarks).
#pragma once

#include <napi.h>

#include "addon/js_tensor.h"
#include "core/ep_exchange.h"

namespace moe::addon {

Napi::Value EpLoad(const Napi::CallbackInfo& info);
Napi::Value EpInit(const Napi::CallbackInfo& info);
Napi::Value EpFinalize(const Napi::CallbackInfo& info);
Napi::Value EpCreateShard(const Napi::CallbackInfo& info);
Napi::Value EpFailForward(const Napi::CallbackInfo& info);
Napi::Value EpAllgather(const Napi::CallbackInfo& info);
Napi::Value EpBarrier(const Napi::CallbackInfo& info);
Napi::Value EpShardStats(const Napi::CallbackInfo& info);
Napi::Value EpExchangeAb(const Napi::CallbackInfo& info);
Napi::Value EpNcclProbe(const Napi::CallbackInfo& info);
Napi::Value EpNcclInit(const Napi::CallbackInfo& info);
Napi::Value EpNcclExchange(const Napi::CallbackInfo& info);

// args.ep = { handle: External<EpShard> } (absent: a single-process forward),
// with the holder kept alive for the call.
Status epShardFromJs(const Napi::Object& args, KeepAlive* keep, EpShard** shard);

}  // namespace moe::addon
