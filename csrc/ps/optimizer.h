// Server-side optimizers for mode "server": the worker pushes a gradient and
// the shard updates its fp32 parameters in place, with the learning rate that
// travels in the push (so the worker's LR scheduler keeps working).
// Semantics follow torch.optim.SGD / Adam / AdamW (foreach=False) exactly:
//   SGD:  g += wd*p; buf = first ? g : m*buf + (1-dampening)*g;
//         g = nesterov ? g + m*buf : buf; p -= lr*g
//   Adam: g += wd*p (AdamW instead p *= 1 - lr*wd); m = b1*m + (1-b1)*g;
//         v = b2*v + (1-b2)*g^2; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// Mode "delta" uses kind kAdd: p += payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace distx::ps {

struct OptimizerConfig {
  enum class Kind : uint8_t { kAdd = 0, kSgd = 1, kAdam = 2, kAdamW = 3 };
  Kind kind = Kind::kAdd;
  double momentum = 0, dampening = 0, weightDecay = 0;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  // fp32 state slots per element this optimizer keeps.
  int slots() const {
    if (kind == Kind::kSgd) return momentum != 0 ? 1 : 0;
    if (kind == Kind::kAdam || kind == Kind::kAdamW) return 2;
    return 0;
  }
};

struct OptimizerState {
  std::vector<float> slot0, slot1;  // SGD momentum buffer; Adam exp_avg, exp_avg_sq
  int64_t step = 0;                 // updates applied so far
};

// Applies one update of `n` elements. `p` and `state` belong to one key.
void applyUpdate(const OptimizerConfig& cfg, OptimizerState& state, float* p, const float* g,
                 size_t n, double lr);

}  // namespace distx::ps
