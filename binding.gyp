{
  "variables": { "sanitize%": 0 },
  "targets": [
    {
      "target_name": "moe_kernels",
      "sources": [
        "native/src/addon/module.cpp",
        "native/src/addon/errors.cpp",
        "native/src/addon/js_tensor.cpp",
        "native/src/addon/op_runner.cpp",
        "native/src/addon/package_threads.cpp",
        "native/src/addon/op_bindings.cpp",
        "native/src/addon/runtime_bindings.cpp",
        "native/src/addon/moe_bindings.cpp",
        "native/src/addon/cuda_bindings.cpp",
        "native/src/addon/ep_bindings.cpp",
        "native/src/addon/mapped_file_bindings.cpp",
        "native/src/ep/mpi_transport.cpp",
        "native/src/ep/nccl_transport.cpp",
        "native/src/core/ep_exchange.cpp",
        "native/src/cuda_host/plugin.cpp",
        "native/src/cuda_host/cuda_backend.cpp",
        "native/src/cuda_host/flag_slots.cpp",
        "native/src/cuda_host/cuda_device.cpp",
        "native/src/backends.cpp",
        "native/src/core/backend.cpp",
        "native/src/core/moe_forward.cpp",
        "native/src/platform/glibc_compat.cpp",
        "native/src/platform/glibc_versions.S",
        "native/src/platform/mapped_file.cpp",
        "native/src/core/status.cpp",
        "native/src/core/tensor.cpp",
        "native/src/core/numerics.cpp",
        "native/src/core/op_checks.cpp",
        "native/src/core/moe_op_checks.cpp",
        "native/src/cpu/thread_pool.cpp",
        "native/src/cpu/huge_pages.cpp",
        "native/src/cpu/evict_caches.cpp",
        "native/src/cpu/cpu_backend.cpp",
        "native/src/cpu/quantize.cpp",
        "native/src/cpu/quantize_row_avx2.cpp",
        "native/src/cpu/quantize_row_avx512.cpp",
        "native/src/cpu/grouped_gemm_fp8.cpp",
        "native/src/cpu/route.cpp",
        "native/src/cpu/router_logits.cpp",
        "native/src/cpu/router_dots.cpp",
        "native/src/cpu/dispatch_layout.cpp",
        "native/src/cpu/dispatch.cpp",
        "native/src/cpu/swiglu.cpp",
        "native/src/cpu/expert_chain.cpp",
        "native/src/cpu/expert_up.cpp",
        "native/src/cpu/segments.cpp",
        "native/src/cpu/combine.cpp",
        "native/src/cpu/cpu_features.cpp",
        "native/src/cpu/machine_peaks.cpp",
        "native/src/cpu/gemm_fp8.cpp",
        "native/src/cpu/gemm_fp8_portable.cpp",
        "native/src/cpu/gemm_fp8_avx2.cpp",
        "native/src/cpu/gemm_fp8_avx512.cpp",
        "native/src/cpu/gemm_fp8_amx.cpp",
        "native/src/cpu/gemm_fp8_avx512bf16.cpp",
        "native/src/cpu/gemm_fp8_bf16.cpp",
        "native/src/cpu/router_logits_amx.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/src",
        "native/cuda/include",
        "native/mpi/include"
      ],
      # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: an error made or thrown in an
      # environment that is being torn down (worker.terminate() during a native
      # call) is dropped instead of being a fatal error of the whole process.
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-std=gnu++17", "-fno-exceptions", "-O2"],
      "ldflags": [
        "-pthread",
        # Never unmapped: a worker thread that loaded the addon last unloads it
        # at exit, while the process-wide thread pool's threads (and libuv's,
        # finishing a Promise op) may still run its code.
        "-Wl,-z,nodelete"
      ],
      "conditions": [
        # scripts/sanitize.sh: `node-gyp rebuild --sanitize=1` builds the addon
        # with AddressSanitizer and UndefinedBehaviorSanitizer, linked against
        # the shared runtimes (no static libstdc++, no glibc symbol pinning).
        ["sanitize==1", {
          "cflags_cc": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined", "-g"],
          "ldflags": ["-fsanitize=address,undefined"]
        }, {
          "ldflags": [
            "-static-libstdc++",
            "-static-libgcc",
            "-Wl,@<(module_root_dir)/native/src/platform/glibc_compat.wrap"
          ]
        }]
      ],
      "libraries": ["-ldl"]
    }
  ]
}
