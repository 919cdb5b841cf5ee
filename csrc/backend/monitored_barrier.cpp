// monitoredBarrier: a barrier that names the ranks that did not arrive.
//
// Rank 0 posts a 1-byte receive from every other rank and waits for each
// until the deadline (the op's timeout); with wait_all_ranks it keeps
// collecting after the first miss so the error lists every absent rank,
// otherwise it reports the first. Only when everyone arrived does it release
// the others with a 1-byte reply; a rank that gets no reply fails too (rank 0
// failed, or it was itself too late). Runs in issue order on the worker
// thread like any collective; the caller blocks, as with Gloo. The messages
// follow Gloo's wording ("Rank 1 failed to pass monitoredBarrier in 2000 ms",
// "Rank 0 timed out in monitoredBarrier ...", "Rank 2 successfully reached
// monitoredBarrier, but received errors while waiting for send/recv from rank
// 0 ...") so tools and tests that match them work on both.
//
// torch's Python dist.monitored_barrier refuses every backend but Gloo before
// reaching here; ProcessGroup.monitored_barrier(timeout, wait_all_ranks)
// (e.g. on dist.group.WORLD) calls it directly.
#include <c10/util/Exception.h>

#include <sstream>

#include "backend/process_group_distx.hpp"

namespace distx {
namespace {

constexpr uint64_t kArriveSlot = 0;
constexpr uint64_t kReleaseSlot = 1;

}  // namespace

void ProcessGroupDistx::monitoredBarrier(const c10d::BarrierOptions& opts, bool waitAllRanks) {
  const char* op = "monitored_barrier";
  int64_t ms = opts.timeout.count();
  if (opts.timeout == c10d::kUnsetTimeout) {
    std::lock_guard<std::mutex> lock(mu_);
    ms = timeout_.load().count();
  }
  auto work = enqueue(
      c10d::OpType::BARRIER, op, opts.timeout, {}, [waitAllRanks, ms](CollectiveContext& ctx) {
        const int P = ctx.size();
        uint8_t token = 1;
        if (ctx.rank() != 0) {
          uint8_t reply = 0;
          auto rreq = ctx.recv(0, kReleaseSlot, &reply, 1);
          auto sreq = ctx.send(0, kArriveSlot, &token, 1);
          try {
            ctx.wait(*sreq, "monitored_barrier send to", 0);
            ctx.wait(*rreq, "monitored_barrier release from", 0);
          } catch (const Error& e) {
            C10_THROW_ERROR(
                DistBackendError,
                detail::concat("Rank ", ctx.rank(),
                               " successfully reached monitoredBarrier, but received errors while "
                               "waiting for send/recv from rank 0 (rank 0 found a rank missing "
                               "within ",
                               ms, " ms, or failed itself): ", e.what()));
          }
          return;
        }
        std::vector<uint8_t> sink(P);
        std::vector<RequestPtr> arrivals(P);
        for (int r = 1; r < P; ++r)
          arrivals[r] = ctx.recv(r, kArriveSlot, &sink[r], 1);
        std::vector<int> missing;
        for (int r = 1; r < P; ++r) {
          if (!waitAllRanks && Clock::now() >= ctx.deadline && !arrivals[r]->test()) {
            // Rank 0 itself ran out of time before it could check rank r.
            C10_THROW_ERROR(
                DistBackendError,
                detail::concat("Rank 0 timed out in monitoredBarrier after ", ms, " ms; ranks 1..",
                               r - 1, " had arrived, rank ", r, " had not"));
          }
          try {
            ctx.wait(*arrivals[r], "monitored_barrier arrival of", r);
          } catch (const Timeout&) {
            missing.push_back(r);  // the deadline has passed: later waits only test
            if (!waitAllRanks) break;
          }
        }
        if (!missing.empty()) {
          std::ostringstream ranks;
          for (size_t i = 0; i < missing.size(); ++i)
            ranks << (i ? ", " : "") << missing[i];
          C10_THROW_ERROR(DistBackendError,
                          detail::concat(missing.size() == 1 ? "Rank " : "Ranks ", ranks.str(),
                                         " failed to pass monitoredBarrier in ", ms, " ms"));
        }
        std::vector<RequestPtr> releases;
        for (int r = 1; r < P; ++r)
          releases.push_back(ctx.send(r, kReleaseSlot, &token, 1));
        for (int r = 1; r < P; ++r)
          ctx.wait(*releases[r - 1], "monitored_barrier release to", r);
      });
  work->wait();
}

}  // namespace distx
