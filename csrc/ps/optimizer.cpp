#include "ps/optimizer.h"

#include <cmath>

namespace distx::ps {
namespace {

void sgd(const OptimizerConfig& c, OptimizerState& s, float* p, const float* g, size_t n,
         float lr) {
  const float wd = static_cast<float>(c.weightDecay), m = static_cast<float>(c.momentum);
  const float damp = 1.0f - static_cast<float>(c.dampening);
  if (m == 0) {
    for (size_t i = 0; i < n; ++i)
      p[i] -= lr * (g[i] + wd * p[i]);
    return;
  }
  const bool first = s.step == 0;
  if (s.slot0.size() != n) s.slot0.assign(n, 0.0f);
  float* buf = s.slot0.data();
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i] + wd * p[i];
    buf[i] = first ? gi : m * buf[i] + damp * gi;
    const float d = c.nesterov ? gi + m * buf[i] : buf[i];
    p[i] -= lr * d;
  }
}

void adam(const OptimizerConfig& c, OptimizerState& s, float* p, const float* g, size_t n,
          double lr) {
  if (s.slot0.size() != n) s.slot0.assign(n, 0.0f);
  if (s.slot1.size() != n) s.slot1.assign(n, 0.0f);
  const int64_t t = s.step + 1;
  const double bc1 = 1.0 - std::pow(c.beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(c.beta2, static_cast<double>(t));
  const float stepSize = static_cast<float>(lr / bc1);
  const float bc2Sqrt = static_cast<float>(std::sqrt(bc2));
  const float b1 = static_cast<float>(c.beta1), b2 = static_cast<float>(c.beta2);
  const float eps = static_cast<float>(c.eps), wd = static_cast<float>(c.weightDecay);
  const bool decoupled = c.kind == OptimizerConfig::Kind::kAdamW;
  const float decay = decoupled ? static_cast<float>(1.0 - lr * c.weightDecay) : 1.0f;
  float* m = s.slot0.data();
  float* v = s.slot1.data();
  for (size_t i = 0; i < n; ++i) {
    float gi = g[i];
    if (decoupled) {
      p[i] *= decay;
    } else {
      gi += wd * p[i];
    }
    m[i] = b1 * m[i] + (1.0f - b1) * gi;
    v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
    const float denom = std::sqrt(v[i]) / bc2Sqrt + eps;
    p[i] -= stepSize * (m[i] / denom);
  }
}

}  // namespace

void applyUpdate(const OptimizerConfig& cfg, OptimizerState& state, float* p, const float* g,
                 size_t n, double lr) {
  switch (cfg.kind) {
    case OptimizerConfig::Kind::kAdd:
      for (size_t i = 0; i < n; ++i)
        p[i] += g[i];
      break;
    case OptimizerConfig::Kind::kSgd:
      sgd(cfg, state, p, g, n, static_cast<float>(lr));
      break;
    case OptimizerConfig::Kind::kAdam:
    case OptimizerConfig::Kind::kAdamW:
      adam(cfg, state, p, g, n, lr);
      break;
  }
  ++state.step;
}

}  // namespace distx::ps
