// torch_distx._C._ps: the parameter-server node for torch_distx.ps.
//
// A PsNode owns its own UCX transport (bootstrapped through a store the
// Python side scopes with a PrefixStore) so that parameter-server traffic has
// its own failure semantics: a dead worker is not the end of the job here,
// while the backend's transport aborts on the first death (Note [PS liveness]).
#include <torch/csrc/utils/pybind.h>

#include <memory>

#include "backend/store_bootstrap.hpp"
#include "common/tag.h"
#include "ps/node.h"
#include "transport/ucx/ucx_transport.h"

namespace py = pybind11;

namespace distx {
namespace {

class PsNode {
 public:
  PsNode(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, ps::NodeConfig cfg,
         const at::Tensor& init) {
    TORCH_CHECK(init.scalar_type() == at::kFloat && init.is_contiguous() && init.is_cpu() &&
                    static_cast<size_t>(init.numel()) == cfg.total,
                "ps: init must be a contiguous CPU float32 tensor of ", cfg.total, " elements");
    const auto deadline = Clock::now() + cfg.timeout;
    py::gil_scoped_release release;
    // Joins this PS's incarnation of the store's keys (Note [Store incarnations]).
    bootstrap_ = std::make_unique<StoreBootstrap>(store, rank, size, deadline);
    transport_ = std::make_unique<ucx::UcxTransport>(rank, size, *bootstrap_, deadline);
    node_ = std::make_unique<ps::Node>(*transport_, std::move(cfg), init.data_ptr<float>(),
                                       bootstrap_.get());
  }
  ~PsNode() { close(); }

  void close() {
    if (!node_) return;
    py::gil_scoped_release release;
    try {
      node_->close();
    } catch (const std::exception&) {
    }
    node_.reset();
    transport_->shutdown();
    transport_.reset();
  }

  void sendRaw(int dst, uint32_t key, const std::string& bytes) {
    node();
    auto req = transport_->send(dst, tag::makePs(tag::kPsToShard, transport_->rank(), key),
                                bytes.data(), bytes.size());
    transport_->wait(*req, Clock::now() + std::chrono::seconds(30), "ps raw send");
  }

  ps::Node& node() {
    TORCH_CHECK(node_ != nullptr, "ps: this parameter-server node is closed");
    return *node_;
  }

  static const float* data(const at::Tensor& t, size_t n) {
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.is_cpu() &&
                    static_cast<size_t>(t.numel()) == n,
                "ps: expected a contiguous CPU float32 tensor of ", n, " elements, got ", t.sizes(),
                " ", t.scalar_type());
    return t.data_ptr<float>();
  }

 private:
  std::unique_ptr<StoreBootstrap> bootstrap_;
  std::unique_ptr<ucx::UcxTransport> transport_;
  std::unique_ptr<ps::Node> node_;
};

}  // namespace

void initPsBindings(py::module& m) {
  py::class_<PsNode>(m, "_PsNode")
      .def(py::init([](const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                       std::vector<int> workers, std::vector<int> servers, int staleness,
                       int optKind, double momentum, double dampening, double weightDecay,
                       bool nesterov, double beta1, double beta2, double eps, size_t chunkElems,
                       double timeoutSeconds, const at::Tensor& init, int compression,
                       double topkRatio) {
             ps::NodeConfig cfg;
             cfg.workers = std::move(workers);
             cfg.servers = std::move(servers);
             cfg.staleness = staleness;
             TORCH_CHECK(optKind >= 0 && optKind <= 3, "ps: bad optimizer kind ", optKind);
             cfg.optimizer.kind = static_cast<ps::OptimizerConfig::Kind>(optKind);
             cfg.optimizer.momentum = momentum;
             cfg.optimizer.dampening = dampening;
             cfg.optimizer.weightDecay = weightDecay;
             cfg.optimizer.nesterov = nesterov;
             cfg.optimizer.beta1 = beta1;
             cfg.optimizer.beta2 = beta2;
             cfg.optimizer.eps = eps;
             cfg.total = static_cast<size_t>(init.numel());
             cfg.chunkElems = chunkElems;
             TORCH_CHECK(
                 compression >= 0 && compression <= static_cast<int>(compression::kMaxMethod),
                 "ps: bad compression codec ", compression);
             cfg.compression = static_cast<ps::Codec>(compression);
             TORCH_CHECK(topkRatio > 0 && topkRatio <= 1, "ps: top-k ratio must be in (0, 1], got ",
                         topkRatio);
             cfg.topkRatio = topkRatio;
             cfg.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeoutSeconds * 1000));
             return std::make_unique<PsNode>(store, rank, size, std::move(cfg), init);
           }),
           py::arg("store"), py::arg("rank"), py::arg("size"), py::arg("workers"),
           py::arg("servers"), py::arg("staleness"), py::arg("opt_kind"), py::arg("momentum"),
           py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("beta1"),
           py::arg("beta2"), py::arg("eps"), py::arg("chunk_elems"), py::arg("timeout_seconds"),
           py::arg("init"), py::arg("compression") = 0, py::arg("topk_ratio") = 0.01)
      .def("is_worker", [](PsNode& n) { return n.node().isWorker(); })
      .def("is_server", [](PsNode& n) { return n.node().isServer(); })
      .def("num_keys", [](PsNode& n) { return n.node().layout().keys(); })
      .def("clock", [](PsNode& n) { return n.node().client().clock(); })
      .def("set_clock", [](PsNode& n, int64_t c) { n.node().client().setClock(c); })
      .def("in_flight", [](PsNode& n) { return n.node().client().inFlight(); })
      .def("push_pull",
           [](PsNode& n, const at::Tensor& update, double lr) {
             const float* p = PsNode::data(update, n.node().config().total);
             py::gil_scoped_release release;
             n.node().client().pushPull(p, lr);
           })
      .def("pull",
           [](PsNode& n) {
             py::gil_scoped_release release;
             n.node().client().pull();
           })
      .def("wait",
           [](PsNode& n, at::Tensor& out) {
             float* p = const_cast<float*>(PsNode::data(out, n.node().config().total));
             py::gil_scoped_release release;
             n.node().client().wait(p);
           })
      .def("get_state",
           [](PsNode& n) {
             std::vector<std::vector<uint8_t>> blobs;
             {
               py::gil_scoped_release release;
               blobs = n.node().client().getState();
             }
             py::list out;
             for (auto& b : blobs)
               out.append(py::bytes(reinterpret_cast<const char*>(b.data()), b.size()));
             return out;
           })
      .def("set_state",
           [](PsNode& n, const std::vector<std::string>& blobs) {
             std::vector<std::vector<uint8_t>> v;
             for (auto& b : blobs)
               v.emplace_back(b.begin(), b.end());
             py::gil_scoped_release release;
             n.node().client().setState(v);
           })
      .def("reply_log", [](PsNode& n) { return n.node().client().replyLog(); })
      .def("pushed_bytes",
           [](PsNode& n) {
             auto& c = n.node().client();
             return std::make_pair(c.pushedBytes(), c.rawBytes());
           })
      .def("clear_reply_log", [](PsNode& n) { n.node().client().clearReplyLog(); })
      .def("failure", [](PsNode& n) { return n.node().failure(); })
      .def("stats",
           [](PsNode& n) {
             py::dict d;
             auto* s = n.node().server();
             if (!s) return d;
             auto st = s->stats();
             d["applied"] = st.applied;
             d["rejected"] = st.rejected;
             py::dict by;
             for (size_t i = 1; i < st.rejectedBy.size(); ++i)
               by[ps::rejectReasonName(static_cast<ps::RejectReason>(i))] = st.rejectedBy[i];
             d["rejected_by"] = by;
             d["failure"] = s->failure();
             return d;
           })
      .def("wait_server_idle",
           [](PsNode& n) {
             auto* s = n.node().server();
             if (!s) return;
             // Sleeps in short slices so Ctrl-C reaches Python.
             while (s->running()) {
               {
                 py::gil_scoped_release release;
                 std::this_thread::sleep_for(std::chrono::milliseconds(50));
               }
               if (PyErr_CheckSignals() != 0) throw py::error_already_set();
             }
           })
      .def("leave",
           [](PsNode& n) {
             py::gil_scoped_release release;
             n.node().client().leave();
           })
      .def("close", &PsNode::close)
      .def("_send_raw",
           [](PsNode& n, int dst, uint32_t key, const std::string& bytes) {
             // Test hook: arbitrary bytes to a shard as PS traffic (malformed-push tests).
             py::gil_scoped_release release;
             n.sendRaw(dst, key, bytes);
           })
      .def("_kind_tag", [](PsNode&) { return static_cast<int>(tag::Kind::kPs); });
}

}  // namespace distx
