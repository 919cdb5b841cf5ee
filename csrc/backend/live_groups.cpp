// The registry of live groups and the atexit shutdown (Note [Shutdown at exit]).
#include <unistd.h>

#include <algorithm>

#include "backend/process_group_distx.hpp"

namespace distx {

// Note [Shutdown at exit]
// A script that never calls destroy_process_group() (Lightning's DDP strategy
// is one) leaves the group alive into interpreter finalization. Its threads
// may still drop the last reference to a tensor Python knows, which takes
// the GIL; during finalization that call ends the thread with a forced
// unwind, and the unwind through a destructor aborts the process
// ("terminate called without an active exception"). So:
// - torch_distx registers an atexit handler, _C._shutdown_live_groups
//   (LiveGroups::shutdownAll), that runs before finalization starts, with the
//   GIL released: every group this process created and nobody shut down
//   drains its queue (for at most min(timeout, kExitShutdownCap)) and joins
//   its threads, and nothing of ours touches Python afterwards;
// - a forked child skips its parent's groups (their threads are not in the
//   child; joining them would hang);
// - the worker lets go of a job's captured tensors before it completes the
//   Work, so a caller that waited never races the worker's release.
LiveGroups& liveGroups() {
  static auto* groups = new LiveGroups();  // never destroyed: used at exit
  return *groups;
}

void LiveGroups::add(const c10::intrusive_ptr<ProcessGroupDistx>& pg) {
  std::lock_guard<std::mutex> lock(mu_);
  groups_.erase(
      std::remove_if(groups_.begin(), groups_.end(), [](const Entry& e) { return e.pg.expired(); }),
      groups_.end());
  groups_.push_back({c10::weak_intrusive_ptr<ProcessGroupDistx>(pg), getpid()});
}

int LiveGroups::shutdownAll() {
  std::vector<c10::intrusive_ptr<ProcessGroupDistx>> alive;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const pid_t self = getpid();
    for (auto& e : groups_) {
      if (e.pid != self) continue;  // a forked child's copy of its parent's group
      if (auto pg = e.pg.lock()) alive.push_back(std::move(pg));
    }
    groups_.erase(std::remove_if(groups_.begin(), groups_.end(),
                                 [self](const Entry& e) { return e.pid == self; }),
                  groups_.end());
  }
  int stopped = 0;
  for (auto& pg : alive)
    stopped += pg->shutdownAtExit() ? 1 : 0;
  return stopped;
}

}  // namespace distx
