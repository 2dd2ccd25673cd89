// moeForward(args, async): the whole MoE layer in one native call. lib/moe
// builds `args` (weights, workspace views sized for this T, options).
#include "addon/moe_bindings.h"

#include <string>

#include "addon/binding_support.h"
#include "core/moe_forward.h"

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

}  // namespace

Napi::Value MoeForward(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<MoeForwardArgs>();
  return bind(
      info, "moeForward",
      [&](Call& call) {
        KeepAlive* keep = call.keep.get();
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "x", "moeForward: x", &args->x, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "gate", "moeForward: gate", &args->gate, keep));
        MOE_RETURN_IF_ERROR(optionalTensorFromJs(call.args, "bias", "moeForward: bias", &args->bias, keep));
        const Napi::Value routing = call.args.Get("routing");
        if (!routing.IsObject()) return Status(Code::kRange, "moeForward: routing: expected an object");
        MOE_RETURN_IF_ERROR(parseRouteOptions(routing.As<Napi::Object>(), &args->routing));
        MOE_RETURN_IF_ERROR(int64FromJs(call.args, "align", "moeForward: align", 1, 1 << 16, &args->align));
        MOE_RETURN_IF_ERROR(parseExpertWeights(call.args, "w13", &args->w13, keep));
        MOE_RETURN_IF_ERROR(parseExpertWeights(call.args, "w2", &args->w2, keep));
        MOE_RETURN_IF_ERROR(parseExpertWeights(call.args, "sharedW13", &args->sharedW13, keep));
        MOE_RETURN_IF_ERROR(parseExpertWeights(call.args, "sharedW2", &args->sharedW2, keep));
        MOE_RETURN_IF_ERROR(parseWorkspace(call.args, &args->ws, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "out", "moeForward: out", &args->out, keep));
        const Napi::Value seconds = call.args.Get("stageSeconds");
        if (seconds.IsTypedArray()) {
          Napi::TypedArray array = seconds.As<Napi::TypedArray>();
          if (array.TypedArrayType() != napi_float64_array || array.ElementLength() < kNumStages) {
            return Status(Code::kDtype, "moeForward: stageSeconds: expected a Float64Array of " + std::to_string(kNumStages));
          }
          keep->add(array);
          args->stageSeconds =
              reinterpret_cast<double*>(static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset());
        }
        return Status::ok();
      },
      [args](Backend& backend) { return moeForward(backend, *args); });
}

}  // namespace moe::addon
