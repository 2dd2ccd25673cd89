#include "addon/errors.h"

namespace moe::addon {

namespace {

// The JS values the addon holds, one set per environment (the main thread
// and each worker thread load the addon into an environment of their own):
// a reference is only valid in the environment that made it, so a
// process-wide static would hand one thread's MoeError class to another's
// isolate. Owned by the environment's instance data, freed with it.
struct EnvData {
  Napi::FunctionReference errorClass;
  Napi::FunctionReference pinBuffer;
};

EnvData* envData(Napi::Env env) {
  EnvData* data = env.GetInstanceData<EnvData>();
  if (data == nullptr) {
    data = new EnvData;
    env.SetInstanceData(data);  // deleted at the environment's teardown
  }
  return data;
}

}  // namespace

void setErrorClass(const Napi::Function& moeErrorClass, const Napi::Value& pinBuffer) {
  EnvData* data = envData(moeErrorClass.Env());
  data->errorClass = Napi::Persistent(moeErrorClass);
  if (pinBuffer.IsFunction()) data->pinBuffer = Napi::Persistent(pinBuffer.As<Napi::Function>());
}

void pinArrayBuffer(Napi::Env env, napi_value arrayBuffer) {
  EnvData* data = env.GetInstanceData<EnvData>();
  if (data == nullptr || data->pinBuffer.IsEmpty()) return;
  napi_value result = nullptr;
  // Checked statuses, no C++ wrapper: a terminating environment (the call
  // fails) must not turn into a fatal error.
  napi_call_function(env, env.Undefined(), data->pinBuffer.Value(), 1, &arrayBuffer, &result);
}

Napi::Error toJsError(Napi::Env env, const Status& status) {
  const char* code = codeName(status.code());
  EnvData* data = env.GetInstanceData<EnvData>();
  if (data != nullptr && !data->errorClass.IsEmpty()) {
    Napi::Object error = data->errorClass.New({Napi::String::New(env, code), Napi::String::New(env, status.message())});
    return Napi::Error(env, error);
  }
  Napi::Error error = Napi::Error::New(env, status.message());
  error.Set("code", Napi::String::New(env, code));
  return error;
}

}  // namespace moe::addon
