#include "addon/errors.h"

namespace moe::addon {

namespace {
Napi::FunctionReference& errorClass() {
  static Napi::FunctionReference ref;
  return ref;
}
}  // namespace

void setErrorClass(const Napi::Function& moeErrorClass) {
  errorClass() = Napi::Persistent(moeErrorClass);
  errorClass().SuppressDestruct();
}

Napi::Error toJsError(Napi::Env env, const Status& status) {
  const char* code = codeName(status.code());
  if (!errorClass().IsEmpty()) {
    Napi::Object error = errorClass().New({Napi::String::New(env, code), Napi::String::New(env, status.message())});
    return Napi::Error(env, error);
  }
  Napi::Error error = Napi::Error::New(env, status.message());
  error.Set("code", Napi::String::New(env, code));
  return error;
}

}  // namespace moe::addon
