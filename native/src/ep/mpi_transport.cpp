#include "ep/mpi_transport.h"

#include <dlfcn.h>
#include <unistd.h>

namespace moe::ep {

namespace {

std::mutex worldMutex;
std::shared_ptr<MpiTransport> world;


moe_mpi_exchange toPlugin(const RowExchange& x) {
  return moe_mpi_exchange{x.send, x.recv, x.rowBytes, x.sendRows, x.sendOffsets, x.recvRows, x.recvOffsets};
}

}  // namespace

MpiPlugin& MpiPlugin::instance() {
  static MpiPlugin plugin;
  return plugin;
}

void MpiPlugin::load(const std::vector<std::string>& candidates) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (loaded_) return;
  loaded_ = true;
  for (const std::string& candidate : candidates) {
    if (access(candidate.c_str(), R_OK) == 0) {
      path_ = candidate;
      break;
    }
  }
  if (path_.empty()) {
    reason_ = "the MPI transport is not built (npm run build:mpi builds libmoe_mpi.so with the system's mpicc)";
    return;
  }
  // RTLD_LOCAL: the plug-in promotes libmpi to global itself when it initializes MPI.
  void* library = dlopen(path_.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* error = dlerror();
    reason_ = std::string("cannot load the MPI transport (is the MPI it was built with installed?): ") + (error ? error : path_);
    return;
  }
  using GetApi = const moe_mpi_api* (*)(uint32_t);
  auto getApi = reinterpret_cast<GetApi>(dlsym(library, "moe_mpi_get_api"));
  if (getApi == nullptr) {
    reason_ = "the MPI transport at " + path_ + " lacks moe_mpi_get_api (an older or foreign build)";
    return;
  }
  const moe_mpi_api* api = getApi(MOE_MPI_ABI_VERSION);
  if (api == nullptr || api->struct_size < sizeof(moe_mpi_api)) {
    reason_ = "the MPI transport at " + path_ + " speaks another ABI than version " + std::to_string(MOE_MPI_ABI_VERSION) +
              " (rebuild it with npm run build:mpi)";
    return;
  }
  api_ = api;
  reason_ = "usable";
}

Status fromMpi(int code, const char* message, const char* what) {
  if (code == MOE_MPI_OK) return Status::ok();
  const std::string text = std::string(what) + ": " + (message && message[0] ? message : "MPI error");
  switch (code) {
    case MOE_MPI_ERR_TIMEOUT: return Status(Code::kEpTimeout, text);
    case MOE_MPI_ERR_ARGUMENT: return Status(Code::kRange, text);
    default: return Status(Code::kEpTransport, text);
  }
}

Status MpiTransport::alltoall(const void* send, void* recv, size_t bytes) {
  char err[512] = {0};
  MOE_RETURN_IF_ERROR(fromMpi(api_->alltoall(send, recv, bytes, timeout_, err, sizeof err), err, "expert parallelism"));
  fault_.afterReceive(FaultInjection::Step::kCounts, forwards, recv, bytes * static_cast<size_t>(size_));
  return Status::ok();
}

Status MpiTransport::alltoallv(const RowExchange* exchanges, int count) {
  moe_mpi_exchange x[8];
  if (count < 1 || count > 8) return Status(Code::kInternal, "alltoallv: 1..8 exchanges");
  for (int i = 0; i < count; ++i) x[i] = toPlugin(exchanges[i]);
  char err[512] = {0};
  MOE_RETURN_IF_ERROR(fromMpi(api_->alltoallv(x, count, timeout_, err, sizeof err), err, "expert parallelism"));
  if (fault_.armed()) {
    int64_t rows = 0;
    for (int s = 0; s < size_; ++s) rows += exchanges[0].recvRows[s];
    fault_.afterReceive(FaultInjection::Step::kDispatch, forwards, exchanges[0].recv, static_cast<size_t>(rows) * exchanges[0].rowBytes);
  }
  return Status::ok();
}

Status MpiTransport::allgather(const void* send, void* recv, size_t bytes) {
  char err[512] = {0};
  return fromMpi(api_->allgather(send, recv, bytes, timeout_, err, sizeof err), err, "expert parallelism");
}

Status MpiTransport::bcast(void* buffer, size_t bytes, int root) {
  char err[512] = {0};
  return fromMpi(api_->bcast(buffer, bytes, root, timeout_, err, sizeof err), err, "expert parallelism");
}

Status MpiTransport::barrier() {
  char err[512] = {0};
  return fromMpi(api_->barrier(timeout_, err, sizeof err), err, "expert parallelism");
}

Status MpiTransport::alltoallvBlocking(const RowExchange& exchange) {
  const moe_mpi_exchange x = toPlugin(exchange);
  char err[512] = {0};
  return fromMpi(api_->alltoallv_blocking(&x, err, sizeof err), err, "MPI_Alltoallv");
}

std::shared_ptr<MpiTransport> worldTransport() {
  std::lock_guard<std::mutex> lock(worldMutex);
  return world;
}

Status initWorld(double timeoutSeconds, int* rank, int* size, int* threadLevel) {
  std::lock_guard<std::mutex> lock(worldMutex);
  const MpiPlugin& plugin = MpiPlugin::instance();
  if (!plugin.available()) return Status(Code::kEpTransport, "initExpertParallel: the MPI transport is not available: " + plugin.reason());
  char err[512] = {0};
  MOE_RETURN_IF_ERROR(fromMpi(plugin.api()->init(rank, size, threadLevel, err, sizeof err), err, "initExpertParallel"));
  if (!world) world = std::make_shared<MpiTransport>(plugin.api(), *rank, *size, timeoutSeconds);
  world->setTimeoutSeconds(timeoutSeconds);
  return Status::ok();
}

Status finalizeWorld() {
  std::lock_guard<std::mutex> lock(worldMutex);
  const MpiPlugin& plugin = MpiPlugin::instance();
  if (!plugin.available() || !world) return Status::ok();
  char err[512] = {0};
  return fromMpi(plugin.api()->finalize(err, sizeof err), err, "finalizeExpertParallel");
}

}  // namespace moe::ep
