// Shape, dtype and option checks of the MoE layer's operations (route,
// dispatchLayout, dispatch, swiglu, combine, routerLogits) that need no tensor
// data, with the CPU backend's codes and messages (cpu/route.cpp,
// cpu/dispatch_layout.cpp, ...), for backends whose tensors live on a device.
// The checks that read data (ids or rows in range, a finite bias or weight,
// NaN in x) are the backend's: the CUDA backend gets them from its kernels'
// error flags (see cuda_host/cuda_backend.cpp).
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
