/**
 * moe-kernels: DeepSeek-style Mixture-of-Experts inference kernels for Node.js.
 * See README.md for the API overview and SPEC.md for what each operation computes.
 */
export { MoeError } from './errors';
export type { MoeErrorCode } from './errors';
export type { DType } from './dtype';
export { Tensor, tensor, empty, bf16FromFloat32, fp8FromFloat32 } from './tensor';
export type { Device } from './tensor';
export { fp8E4m3FromFloat, fp8E4m3ToFloat, bf16FromFloat, bf16ToFloat, FP8_E4M3_MAX } from './numerics';
export {
  quantizeActivations,
  quantizeActivationsSync,
  quantizeWeights,
  quantizeWeightsSync,
  dequantize,
  dequantizeSync,
} from './ops/quantize';
export type { QuantizedTensor, QuantizeOptions, DequantizeOptions, ScaleFormat } from './ops/quantize';
export { gemmFp8, gemmFp8Sync } from './ops/gemm';
export type { GemmOptions } from './ops/gemm';
export { getNumThreads, setNumThreads, cpuInfo } from './runtime';
export type { CpuInfo } from './runtime';
export { backends, getDefaultBackend, setDefaultBackend } from './backends';
export type { BackendInfo, BackendName, CudaDeviceInfo } from './backends';
export { routerLogits, routerLogitsSync } from './ops/router-logits';
export type { RouterLogitsOptions } from './ops/router-logits';
export { route, routeSync, DEEPSEEK_V3_ROUTING } from './ops/route';
export type { RouteOptions, Routing } from './ops/route';
export { dispatchLayout, dispatchLayoutSync } from './ops/dispatch-layout';
export type { DispatchLayout, LayoutOptions } from './ops/dispatch-layout';
export { dispatch, dispatchSync } from './ops/dispatch';
export type { DispatchOptions } from './ops/dispatch';
export { swiglu, swigluSync } from './ops/swiglu';
export type { SwigluOptions } from './ops/swiglu';
export { combine, combineSync } from './ops/combine';
export type { CombineOptions } from './ops/combine';
export { groupedGemmFp8, groupedGemmFp8Sync, groupedGemmFp8Masked, groupedGemmFp8MaskedSync } from './ops/grouped-gemm';
export type { ContiguousGemmOptions, GroupedGemmOptions } from './ops/grouped-gemm';
export { MoeLayer, STAGES, CapturedForward } from './moe/layer';
export type { MoeWeights, StageTimes, ForwardOptions, ForwardProfile, RandomLayerOptions, CaptureOptions } from './moe/layer';
export { DEEPSEEK_V3_CONFIG, scaledDeepSeekV3, configFromHuggingFace } from './moe/config';
export type { MoeConfig } from './moe/config';
export type { ExpertMatrices } from './moe/experts';
export { referenceForwardToken } from './moe/reference';
export { SafetensorsFile, writeSafetensors } from './checkpoint/safetensors';
export { initExpertParallel, finalizeExpertParallel, initNccl, ep, Communicator } from './ep/communicator';
export type { ExpertParallel, ExpertParallelOptions } from './ep/communicator';
export type { ExpertShard } from './ep/shard';
export { mpiTransport, ncclTransport } from './ep/transport';
export type { TransportInfo } from './ep/transport';
export type { SafetensorsDType, TensorInfo } from './checkpoint/safetensors';
export { MoeBatcher } from './serving/batcher';
export type { BatcherOptions, SubmitOptions, BatcherStats } from './serving/batcher';
export { BATCH_CHANNEL } from './serving/events';
export type { BatchEvent } from './serving/events';
export type { RowsInput, RowDType } from './serving/request-rows';
