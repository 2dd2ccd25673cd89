/* Checks that the CUDA plug-in's CPU emulation (native/cuda/test/emulator/) refuses
 * what it is there to catch, so that its silence in the test suite means
 * something: an operand outside its allocation, a synchronization or a
 * read-back inside a graph capture, a graph launched after a buffer it uses
 * was freed, and a read-back that does not wait for the stream. Run by
 * scripts/cuda/build-emulator.sh against the library it built. */
#include <stdio.h>
#include <string.h>

#include "moe_cuda_api.h"

static int failures = 0;

static void expect(int ok, const char* what, const char* err) {
  printf("  %s %s%s%s\n", ok ? "ok  " : "FAIL", what, err[0] ? ": " : "", err);
  if (!ok) ++failures;
}

int main(void) {
  const moe_cuda_api* api = moe_cuda_get_api(MOE_CUDA_ABI_VERSION);
  if (api == NULL) {
    printf("FAIL moe_cuda_get_api(%d) returned NULL\n", MOE_CUDA_ABI_VERSION);
    return 1;
  }
  char err[512] = {0};
  void* a = NULL;
  void* b = NULL;
  expect(api->probe(err, sizeof err, NULL) == MOE_CUDA_OK, "probe", "");
  expect(api->alloc(256, &a, err, sizeof err) == MOE_CUDA_OK && api->alloc(1024, &b, err, sizeof err) == MOE_CUDA_OK, "alloc", "");

  err[0] = 0;
  expect(api->copy_d2d(b, a, 512, err, sizeof err) == MOE_CUDA_ERR_INTERNAL && strstr(err, "moe_cuda_copy_d2d: src") != NULL,
         "a copy past its source allocation is refused, naming the operand", err);
  err[0] = 0;
  expect(api->memset((char*)a + 200, 0, 64, err, sizeof err) == MOE_CUDA_ERR_INTERNAL, "a memset past the end is refused", err);

  /* A read-back waits for the stream: the fill enqueued before it has landed. */
  unsigned char host[256];
  err[0] = 0;
  expect(api->memset(a, 7, 256, err, sizeof err) == MOE_CUDA_OK && api->copy_d2h(host, a, 256, err, sizeof err) == MOE_CUDA_OK &&
             host[0] == 7 && host[255] == 7,
         "a pageable read-back sees the work enqueued before it", err);

  /* Inside a capture: no synchronization, no read-back; the capture then fails to end. */
  moe_cuda_graph graph = NULL;
  err[0] = 0;
  expect(api->graph_begin_capture(err, sizeof err) == MOE_CUDA_OK && api->synchronize(err, sizeof err) == MOE_CUDA_ERR_INTERNAL,
         "synchronize while capturing is refused", err);
  err[0] = 0;
  expect(api->graph_end_capture(&graph, err, sizeof err) == MOE_CUDA_ERR_INTERNAL && graph == NULL && strstr(err, "synchronize") != NULL,
         "and the capture is invalidated, naming why", err);

  /* A graph outliving a buffer it uses. */
  err[0] = 0;
  expect(api->graph_begin_capture(err, sizeof err) == MOE_CUDA_OK && api->copy_d2d(b, a, 256, err, sizeof err) == MOE_CUDA_OK &&
             api->graph_end_capture(&graph, err, sizeof err) == MOE_CUDA_OK && api->graph_launch(graph, err, sizeof err) == MOE_CUDA_OK,
         "a captured copy replays", err);
  err[0] = 0;
  expect(api->free(a, err, sizeof err) == MOE_CUDA_OK && api->graph_launch(graph, err, sizeof err) == MOE_CUDA_ERR_INTERNAL &&
             strstr(err, "no longer") != NULL,
         "launching it after its source was freed is refused", err);
  api->graph_destroy(graph, err, sizeof err);
  err[0] = 0;
  expect(api->synchronize(err, sizeof err) == MOE_CUDA_OK, "no sticky error from the refused calls", err);
  printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
