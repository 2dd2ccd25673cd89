#include "cuda_host/cuda_backend.h"

#include <string>

#include "core/op_checks.h"
#include "cuda_host/plugin.h"

namespace moe::cuda {

namespace {

int32_t pluginDtype(DType dtype) {
  switch (dtype) {
    case DType::kF32: return MOE_CUDA_DTYPE_F32;
    case DType::kBF16: return MOE_CUDA_DTYPE_BF16;
    case DType::kFP8E4M3: return MOE_CUDA_DTYPE_FP8_E4M3;
    case DType::kI32: return MOE_CUDA_DTYPE_I32;
  }
  return MOE_CUDA_DTYPE_F32;
}

Status expectOnDevice(std::initializer_list<const TensorView*> tensors, const char* op) {
  for (const TensorView* t : tensors) {
    if (t->data != nullptr && t->device != Device::kCuda) {
      return Status(Code::kDevice, std::string(op) + ": every tensor must be on the CUDA device");
    }
  }
  return Plugin::instance().expectAvailable(op);
}

Status unsupported(const char* op) {
  return Status(Code::kUnsupported, std::string(op) + " does not run on the CUDA backend yet; move the tensors to the CPU");
}

class CudaBackend final : public Backend {
 private:
  // Quantizing reports NaN or infinity like the CPU backend: the kernel sets a
  // device flag, read back once the kernel is done (this makes the call wait
  // for the GPU; the price of the same error on both backends).
  Status quantize(const QuantizeArgs& args, int64_t blockRows, const char* op) {
    MOE_RETURN_IF_ERROR(checkQuantize(args, blockRows, op));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.x, &args.q, &args.scales}, op));
    const PluginApi& api = Plugin::instance().api();
    char err[512] = {0};
    if (nonFiniteFlag_ == nullptr) {
      MOE_RETURN_IF_ERROR(fromPlugin(api.alloc(sizeof(int32_t), &nonFiniteFlag_, err, sizeof err), err, op));
    }
    moe_cuda_quantize_args q{};
    q.x = args.x.data;
    q.q = args.q.data;
    q.scales = args.scales.as<float>();
    q.nonfinite_flag = static_cast<int32_t*>(nonFiniteFlag_);
    q.rows = args.x.dim(0);
    q.cols = args.x.dim(1);
    q.block_rows = blockRows;
    q.x_dtype = pluginDtype(args.x.dtype);
    q.q_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
    q.scale_dtype = MOE_CUDA_DTYPE_F32;
    q.scale_format = args.scaleFormat == ScaleFormat::kUE8M0 ? MOE_CUDA_SCALE_UE8M0 : MOE_CUDA_SCALE_F32;
    MOE_RETURN_IF_ERROR(fromPlugin(api.quantize(&q, err, sizeof err), err, op));
    int32_t nonFinite = 0;
    MOE_RETURN_IF_ERROR(fromPlugin(api.copyD2H(&nonFinite, nonFiniteFlag_, sizeof nonFinite, err, sizeof err), err, op));
    MOE_RETURN_IF_ERROR(fromPlugin(api.synchronize(err, sizeof err), err, op));
    if (nonFinite != 0) return Status(Code::kNonFinite, std::string(op) + ": x contains NaN or infinity");
    return Status::ok();
  }

  void* nonFiniteFlag_ = nullptr;  // [1] i32 on the device

 public:
  const char* name() const override { return "cuda"; }

  bool supportsOp(OpKind op) const override {
    return op == OpKind::kGemmFp8 || op == OpKind::kGroupedGemmFp8 || op == OpKind::kGroupedGemmFp8Masked ||
           op == OpKind::kQuantizeActivations || op == OpKind::kQuantizeWeights || op == OpKind::kDequantize;
  }

  Status quantizeActivations(const QuantizeArgs& args) override { return quantize(args, 1, "quantizeActivations"); }
  Status quantizeWeights(const QuantizeArgs& args) override { return quantize(args, kWeightBlockRows, "quantizeWeights"); }

  Status dequantize(const DequantizeArgs& args) override {
    MOE_RETURN_IF_ERROR(checkDequantize(args));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.q, &args.scales, &args.out}, "dequantize"));
    moe_cuda_dequantize_args d{};
    d.q = args.q.data;
    d.scales = args.scales.as<const float>();
    d.out = args.out.data;
    d.rows = args.q.dim(0);
    d.cols = args.q.dim(1);
    d.block_rows = args.blockRows;
    d.q_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
    d.scale_dtype = MOE_CUDA_DTYPE_F32;
    d.out_dtype = pluginDtype(args.out.dtype);
    char err[512] = {0};
    return fromPlugin(Plugin::instance().api().dequantize(&d, err, sizeof err), err, "dequantize");
  }

  Status gemmFp8(const GemmFp8Args& args) override {
    MOE_RETURN_IF_ERROR(checkGemmFp8(args));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.a, &args.aScales, &args.b, &args.bScales, &args.d}, "gemmFp8"));
    moe_cuda_gemm_args g{};
    g.a = args.a.data;
    g.sa = args.aScales.as<const float>();
    g.b = args.b.data;
    g.sb = args.bScales.as<const float>();
    g.d = args.d.data;
    g.m = args.a.dim(0);
    g.n = args.b.dim(0);
    g.k = args.a.dim(1);
    g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
    g.scale_dtype = MOE_CUDA_DTYPE_F32;
    g.d_dtype = pluginDtype(args.d.dtype);
    g.kernel = MOE_CUDA_KERNEL_AUTO;
    char err[512] = {0};
    return fromPlugin(Plugin::instance().api().gemmFp8(&g, err, sizeof err), err, "gemmFp8");
  }

  Status groupedGemmFp8(const GroupedGemmFp8Args& args) override {
    GroupedShape shape;
    const char* op = args.maskedM.data ? "groupedGemmFp8Masked" : "groupedGemmFp8";
    Status status = checkGroupedGemmFp8(args, &shape);
    if (!status.isOk()) return Status(status.code(), std::string(op) + ": " + status.message());
    MOE_RETURN_IF_ERROR(
        expectOnDevice({&args.a, &args.aScales, &args.b, &args.bScales, &args.groupIndex, &args.maskedM, &args.d}, op));
    if (args.groupOffset != 0) return Status(Code::kUnsupported, std::string(op) + ": sharded expert weights on the CUDA backend");
    char err[512] = {0};
    const PluginApi& api = Plugin::instance().api();
    if (!shape.masked) {
      moe_cuda_grouped_gemm_args g{};
      g.a = args.a.data;
      g.sa = args.aScales.as<const float>();
      g.b = args.b.data;
      g.sb = args.bScales.as<const float>();
      g.group_index = args.groupIndex.as<const int32_t>();
      g.d = args.d.data;
      g.r = shape.rows;
      g.n = shape.n;
      g.k = shape.k;
      g.g = shape.groups;
      g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
      g.scale_dtype = MOE_CUDA_DTYPE_F32;
      g.d_dtype = pluginDtype(args.d.dtype);
      g.kernel = MOE_CUDA_KERNEL_AUTO;
      return fromPlugin(api.groupedGemmFp8(&g, err, sizeof err), err, op);
    }
    moe_cuda_masked_gemm_args g{};
    g.a = args.a.data;
    g.sa = args.aScales.as<const float>();
    g.b = args.b.data;
    g.sb = args.bScales.as<const float>();
    g.masked_m = args.maskedM.as<const int32_t>();
    g.d = args.d.data;
    g.g = shape.groups;
    g.m_max = shape.rows;
    g.n = shape.n;
    g.k = shape.k;
    g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
    g.scale_dtype = MOE_CUDA_DTYPE_F32;
    g.d_dtype = pluginDtype(args.d.dtype);
    g.kernel = MOE_CUDA_KERNEL_AUTO;
    return fromPlugin(api.groupedGemmFp8Masked(&g, err, sizeof err), err, op);
  }

  // The MoE layer's other operations come with the GPU MoE layer (issue 5).
  Status routerLogits(const RouterLogitsArgs&) override { return unsupported("routerLogits"); }
  Status route(const RouteArgs&) override { return unsupported("route"); }
  Status dispatchLayout(const LayoutArgs&) override { return unsupported("dispatchLayout"); }
  Status dispatch(const DispatchArgs&) override { return unsupported("dispatch"); }
  Status swiglu(const SwigluArgs&) override { return unsupported("swiglu"); }
  Status combine(const CombineArgs&) override { return unsupported("combine"); }
};

}  // namespace

Backend& cudaBackend() {
  static CudaBackend backend;
  return backend;
}

}  // namespace moe::cuda
