// torch_distx._C: the backend factory and build/runtime facts for Python.
#include <torch/csrc/utils/pybind.h>

#include "backend/process_group_distx.hpp"
#include "common/env.h"
#include "transport/ucx/ucx_transport.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "torch-distx native extension";
  m.def("_create_backend", &distx::createProcessGroupDistx, py::arg("store"), py::arg("rank"),
        py::arg("size"), py::arg("timeout_seconds"), py::arg("group_name"),
        py::call_guard<py::gil_scoped_release>(),
        "Creates the distx c10d backend for one process group (called by torch.distributed).");
  m.def("ucx_version", &distx::ucx::UcxTransport::version, "UCX version loaded at run time");
  m.def(
      "env_vars",
      [] {
        py::list out;
        for (const auto& v : distx::env::all())
          out.append(py::make_tuple(v.name, v.defaultValue, v.help));
        return out;
      },
      "The DISTX_* environment variables: (name, default, help)");
}
