// Shape, dtype and option checks of the MoE layer's operations (route,
// dispatchLayout, dispatch, swiglu, combine, routerLogits) that need no tensor
// data: the one copy both backends run before they touch memory, so that each
// reports the same code and message. The checks that read data (ids or rows
// in range, a finite bias or weight, NaN in x) stay with each backend: the CPU
// ops read the values after these checks (cpu/route.cpp, ...), the CUDA
// backend gets them from its kernels' error flags (cuda_host/device_flags.h).
#pragma once

#include "core/ops.h"

namespace moe {

Status checkRouterLogits(const RouterLogitsArgs& args);
Status checkRoute(const RouteArgs& args);
Status checkDispatchLayout(const LayoutArgs& args);
Status checkDispatch(const DispatchArgs& args);
Status checkSwiglu(const SwigluArgs& args);
Status checkCombine(const CombineArgs& args);

}  // namespace moe
