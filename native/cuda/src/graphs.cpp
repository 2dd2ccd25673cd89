// CUDA graphs: capture, replay, destroy. A capture records on a stream of
// the capturing thread's own (set_capture_stream: every entry point called on
// that thread until the end of the capture enqueues there), so that another
// thread's work, which keeps going to the plug-in's stream, can neither be
// recorded into the graph nor invalidate the capture. A replay is one launch
// on the plug-in's stream, ordered with everything else enqueued there.
#include <new>

#include "api_entry.h"
#include "runtime.h"

using namespace moe_cuda;

struct moe_cuda_graph_s {
  cudaGraphExec_t exec = nullptr;
};

namespace {

thread_local cudaStream_t t_capturing = nullptr;  // this thread's capture stream while it captures

// Ends this thread's capture (if any) and frees its stream; `graph` gets what was recorded.
cudaError_t finish_capture(cudaGraph_t* graph) {
  *graph = nullptr;
  if (t_capturing == nullptr) return cudaErrorStreamCaptureUnmatched;
  const cudaError_t e = cudaStreamEndCapture(t_capturing, graph);
  set_capture_stream(nullptr);
  cudaStreamDestroy(t_capturing);
  t_capturing = nullptr;
  return e;
}

}  // namespace

extern "C" {

int moe_cuda_graph_begin_capture(char* err, size_t err_len) {
  const int rc = ready(nullptr, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  if (t_capturing != nullptr) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "moe_cuda_graph_begin_capture: this thread is already capturing");
  cudaStream_t stream = nullptr;
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const cudaError_t e = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    cudaStreamDestroy(stream);
    return cuda_fail(e, "cudaStreamBeginCapture", err, err_len);
  }
  t_capturing = stream;
  set_capture_stream(stream);
  return MOE_CUDA_OK;
}

int moe_cuda_graph_end_capture(moe_cuda_graph* graph, char* err, size_t err_len) {
  if (graph == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_graph_end_capture: graph is null");
  *graph = nullptr;
  const int rc = ready(nullptr, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  cudaGraph_t captured = nullptr;
  MOE_CUDA_CHECK(finish_capture(&captured));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, captured, 0);
  cudaGraphDestroy(captured);  // the executable graph is independent of it
  if (e != cudaSuccess) return cuda_fail(e, "cudaGraphInstantiate", err, err_len);
  moe_cuda_graph_s* h = new (std::nothrow) moe_cuda_graph_s;
  if (h == nullptr) {
    cudaGraphExecDestroy(exec);
    return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "moe_cuda_graph_end_capture: out of host memory");
  }
  h->exec = exec;
  *graph = h;
  return MOE_CUDA_OK;
}

int moe_cuda_graph_launch(moe_cuda_graph graph, char* err, size_t err_len) {
  if (graph == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_graph_launch: graph is null");
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaGraphLaunch(graph->exec, stream));
  return MOE_CUDA_OK;
}

int moe_cuda_graph_destroy(moe_cuda_graph graph, char* err, size_t err_len) {
  if (graph == nullptr) return MOE_CUDA_OK;
  const int rc = ready(nullptr, err, err_len);
  const cudaError_t e = rc == MOE_CUDA_OK ? cudaGraphExecDestroy(graph->exec) : cudaSuccess;
  delete graph;
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(e);
  return MOE_CUDA_OK;
}

}  // extern "C"
