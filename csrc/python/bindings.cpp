// torch_distx._C: the backend factory and build/runtime facts for Python.
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include "backend/process_group_distx.hpp"
#include "common/env.h"
#include "common/settings.h"
#include "common/topology.h"
#include "compression/method.h"
#include "transport/ucx/ucx_memory.h"
#include "transport/ucx/ucx_transport.h"
#ifdef DISTX_WITH_CUDA
#include "transport/nccl/nccl_comm.h"
#endif

namespace py = pybind11;

namespace distx {
void initPsBindings(py::module& m);  // ps_bindings.cpp
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "torch-distx native extension";
  m.def("_create_backend", &distx::createProcessGroupDistx, py::arg("store"), py::arg("rank"),
        py::arg("size"), py::arg("timeout_seconds"), py::arg("group_name"),
        py::arg("options") = std::map<std::string, std::string>{},
        py::call_guard<py::gil_scoped_release>(),
        "Creates the distx c10d backend for one process group (called by torch.distributed).");
  m.def(
      "_shutdown_live_groups", [] { return distx::liveGroups().shutdownAll(); },
      py::call_guard<py::gil_scoped_release>(),
      "Shuts down every distx group still alive; torch_distx runs it at exit "
      "(Note [Shutdown at exit]). Returns how many it shut down.");
  m.def(
      "_topology",
      [](const c10::intrusive_ptr<c10d::Backend>& backend) {
        auto* pg = dynamic_cast<distx::ProcessGroupDistx*>(backend.get());
        TORCH_CHECK_VALUE(pg != nullptr, "torch_distx.topology: the group's backend is ",
                          backend->getBackendName(), ", not distx");
        const auto& t = pg->topology();
        const int r = pg->getRank();
        py::list nodes, hosts, notes;
        for (const auto& n : t.nodes())
          nodes.append(py::cast(n));
        for (const auto& h : pg->hosts()) {
          py::dict d;
          d["hostname"] = h.hostname;
          d["host_id"] = distx::hexId(h.hostId);
          d["boot_id"] = distx::hexId(h.bootId);
          d["from_env"] = h.fromEnv;
          hosts.append(d);
        }
        for (const auto& n : pg->topologyNotes())
          notes.append(n);
        py::dict out;
        out["rank"] = r;
        out["size"] = t.size();
        out["nodes"] = nodes;
        out["num_nodes"] = t.numNodes();
        out["node"] = t.nodeOf(r);
        out["local_rank"] = t.localRank(r);
        out["local_size"] = t.localSize(r);
        out["uniform"] = t.uniform();
        out["ranks_per_node"] = t.ranksPerNode();
        out["leaders"] = py::cast(t.leaders());
        out["flat"] = t.isFlat();
        out["describe"] = t.describe();
        out["hosts"] = hosts;
        out["notes"] = notes;
        return out;
      },
      py::arg("backend"), "The node map of one distx process group (torch_distx.topology).");
  m.def(
      "_local_host",
      [] {
        const auto h = distx::localHostInfo();
        py::dict d;
        d["hostname"] = h.hostname;
        d["host_id"] = distx::hexId(h.hostId);
        d["boot_id"] = distx::hexId(h.bootId);
        d["from_env"] = h.fromEnv;
        return d;
      },
      "This process's host record (what it publishes at group creation).");
  m.def(
      "_compression_stats",
      [](const c10::intrusive_ptr<c10d::Backend>& backend) {
        auto* pg = dynamic_cast<distx::ProcessGroupDistx*>(backend.get());
        TORCH_CHECK_VALUE(pg != nullptr, "compression_stats: not a distx process group");
        const auto& c = pg->compressor().counters();
        const auto& cfg = pg->compressor().config();
        py::dict fallbacks;
        fallbacks["density"] = c.fallbackDensity.load();
        fallbacks["non_finite"] = c.fallbackNonFinite.load();
        py::dict d;
        d["method"] = distx::compression::methodName(cfg.method);
        d["config"] = cfg.describe();
        d["source"] = cfg.source;
        d["calls"] = c.calls.load();
        d["exact_calls"] = c.exactCalls.load();
        d["input_bytes"] = c.inputBytes.load();
        d["bytes_before"] = c.denseBytes.load();
        d["bytes_after"] = c.wireBytes.load();
        d["fallbacks"] = fallbacks;
        d["codec_seconds"] = c.codecNanos.load() / 1e9;
        return d;
      },
      py::arg("backend"), "Counters of a distx group's compressed all-reduces");
  m.def(
      "parse_compression",
      [](const std::string& spec, const std::string& source) {
        try {
          const auto s = distx::compression::parseSpec(spec, source, /*allowOff=*/false);
          return py::make_tuple(static_cast<int>(s.method), s.ratio);
        } catch (const distx::Error& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("spec"), py::arg("source"),
      "Note [Codec vocabulary]: 'none' | 'fp16' | 'bf16' | 'topk:<ratio>' -> (method, ratio); "
      "ValueError naming `source` otherwise");
  m.def(
      "compression_methods",
      [] {
        py::dict d;
        for (auto m : {distx::compression::Method::kNone, distx::compression::Method::kFp16,
                       distx::compression::Method::kBf16, distx::compression::Method::kTopK})
          d[distx::compression::methodName(m)] = static_cast<int>(m);
        return d;
      },
      "Note [Codec vocabulary]: method name -> wire value");
  m.def("ucx_version", &distx::ucx::UcxTransport::version, "UCX version loaded at run time");
  m.def("ucx_cuda_memory", &distx::ucx::cudaMemorySupported,
        "Whether the loaded UCX takes CUDA device memory (Note [CUDA-aware rail])");
  m.def(
      "settings",
      [] {
        py::list out;
        for (const auto& s : distx::settings::table()) {
          out.append(
              py::make_tuple(s.option ? py::object(py::str(s.option)) : py::object(py::none()),
                             s.variable, s.type, s.defaultValue, s.help));
        }
        return out;
      },
      "Every distx setting (Note [Settings table]): (option or None, variable, type, default, "
      "help)");
  distx::initPsBindings(m);
  m.attr("with_cuda") = py::bool_(
#ifdef DISTX_WITH_CUDA
      true
#else
      false
#endif
  );
#ifdef DISTX_WITH_CUDA
  // Note [Loading NCCL]
  m.def("_set_nccl_library", &distx::nccl::setLibraryPath, py::arg("path"),
        "Where to dlopen libnccl.so.2 from (before the first CUDA collective)");
  m.def("nccl_version", &distx::nccl::version, "NCCL version loaded at run time (e.g. 22809)");
  m.def("nccl_compiled_version", &distx::nccl::compiledVersion,
        "NCCL_VERSION_CODE of the headers distx was built with");
  m.def("nccl_library", &distx::nccl::loadedLibraryPath, "Path of the loaded libnccl");
#endif
}
