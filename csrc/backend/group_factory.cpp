// createProcessGroupDistx: what torch calls (through torch_distx._register)
// to make a group. It resolves the group's settings once (Note [Settings
// table]): pg_options over the environment, validated, every bad value a
// ValueError naming where it came from.
#include <c10/util/Exception.h>

#include "algorithms/select.h"
#include "backend/process_group_distx.hpp"
#include "common/settings.h"

namespace distx {
namespace {

ProcessGroupDistx::Config resolveConfig(const settings::GroupInput& in) {
  ProcessGroupDistx::Config c;
  const settings::Given algo = in.get("algo");
  c.algorithm = algo.value.value_or("");
  checkAlgorithmName(c.algorithm, algo.source);
  // Note [Chunk size]: 0 = by where the ranks are.
  c.chunkBytes = settings::parseBytes(in.get("chunk_bytes"), 0, 4096, 1ull << 30, false);
  // Note [Pipelined split-rail].
  c.pieceBytes = settings::parseBytes(in.get("piece_bytes"), kRailPieceAuto, 256, 1ull << 30, true);
  // Note [Compression switch]: merged field by field, validated together.
  compression::Fields fromOptions, fromEnv;
  for (const auto& [option, member] : compression::Fields::kByOption) {
    fromOptions.*member = in.option(option);
    fromEnv.*member = in.variable(option);
  }
  c.compress = compression::resolve(fromOptions, fromEnv);
  return c;
}

}  // namespace

c10::intrusive_ptr<c10d::Backend> createProcessGroupDistx(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, double timeoutSeconds,
    const std::string& groupName, const std::map<std::string, std::string>& options) {
  ProcessGroupDistx::Config config;
  try {
    config = resolveConfig(settings::GroupInput(options));
  } catch (const Error& e) {
    TORCH_CHECK_VALUE(false, "distx: ", e.what());
  }
  config.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeoutSeconds * 1000.0));
  config.groupName = groupName;
  auto pg = c10::make_intrusive<ProcessGroupDistx>(store, rank, size, config);
  liveGroups().add(pg);
  return pg;
}

}  // namespace distx
