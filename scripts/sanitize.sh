#!/usr/bin/env bash
# The addon built with AddressSanitizer + UndefinedBehaviorSanitizer, and the
# hardening tests (the fuzz suite, the child-process crash cases, the JS
# surface, hostile checkpoints) plus the MoE ops' tests run against it.
#
# The build goes to a copy of the tree (node-gyp always writes ./build), so
# the normal addon is untouched. Node itself is not instrumented: the ASan
# runtime is preloaded, and it must leave SIGSEGV to Node (V8 handles some
# faults itself), so handle_segv=0 / allow_user_segv_handler=1. Leak checking
# is off (Node does not free everything at exit). A UBSan finding aborts
# (-fno-sanitize-recover), and every child process inherits the settings, so
# the child-process tests see a finding as a crash.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

asan="$(gcc -print-file-name=libasan.so)"
[ -e "$asan" ] || { echo "sanitize: no libasan.so for gcc (apt-get install libasan8)"; exit 1; }

tar -C "$repo" --exclude=./build --exclude=./build-mpi --exclude=./build-asan --exclude=./build-emu --exclude=./build-cuda \
  --exclude=./node_modules --exclude=./dist --exclude=./prebuilds --exclude=./.git -cf - . | tar -C "$work" -xf -
ln -s "$repo/node_modules" "$work/node_modules"
cd "$work"
npm run --silent build:native -- --sanitize=1 > build.log 2>&1 || { tail -50 build.log; exit 1; }
npm run --silent build:ts

export LD_PRELOAD="$asan"
export ASAN_OPTIONS="detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:abort_on_error=1:detect_odr_violation=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export MOE_NUM_THREADS=4
npx vitest run \
  test/fuzz.test.ts test/hostile-runtime.test.ts test/js-surface.test.ts test/checkpoint-hostile.test.ts \
  test/workspace-bound.test.ts test/errors.test.ts test/dispatch.test.ts test/combine.test.ts test/layout.test.ts \
  test/grouped-gemm.test.ts test/route.test.ts test/swiglu.test.ts test/quantize.test.ts test/worker-teardown.test.ts
