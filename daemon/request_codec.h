// The wire protocol's calls without a socket: which call a request is, what
// an Infer request asks of a model (checked against the model, into an
// InferJob), and the answers made from a finished job, a model and an
// update's status. docs/protocol.md specifies every field and error.
//
// Pure functions, no I/O: the service's request path uses them, and
// request_codec_test.cc checks them alone. PrepareInfer reuses the job's
// buffers (no allocation once they have grown).
//
// Thread-safety: none needed; arguments are the caller's.
#ifndef TERND_DAEMON_REQUEST_CODEC_H_
#define TERND_DAEMON_REQUEST_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "daemon/protocol.pb.h"
#include "daemon/updater.h"
#include "daemon/worker_pool.h"
#include "runtime/lm/lm_model.h"
#include "runtime/runtime.h"
#include "runtime/tokenizer/tokenizer.h"

namespace ternd::daemon {

// Calls as the metrics name them (the `call` label), in this order.
enum CallIndex : size_t {
  kCallInfer,
  kCallModelInfo,
  kCallHealth,
  kCallStats,
  kCallGenerate,
  kCallInstall,
  kCallUpdateStatus,
  kCallCancel,
  kCallInvalid,  // no call set, or not a request at all
};
const std::vector<std::string>& CallNames();
CallIndex CallOf(const wire::Request& request);

// Checks `request` against `model` and fills job->batch, job->inputs (F32
// in model input order; I8 inputs widened) and job->outputs (indices; all
// outputs when the request names none). INVALID_ARGUMENT names the input
// or output and what was expected and found.
Status PrepareInfer(const wire::InferRequest& request,
                    const runtime::LoadedModel& model, InferJob* job);

// The answer to a job that ran successfully on job->model.
void FinishInfer(const InferJob& job, wire::InferResponse* out);

// What ModelInfo says beyond the model itself.
struct HostInfo {
  uint64_t arena_bytes = 0;
  uint64_t slot_bytes = 0;
  uint32_t workers = 0;
  std::string swap;  // "hot" or "cold"
};
void FillModelInfo(const runtime::LoadedModel& model, const HostInfo& host,
                   wire::ModelInfoResponse* out);
// A language model: name, version, kernel, memory and language_model.
// `architecture`: the GGUF architecture the model came from.
void FillModelInfo(const runtime::LmModel& model,
                   const tokenizer::Tokenizer& tokenizer,
                   const std::string& architecture, const HostInfo& host,
                   wire::ModelInfoResponse* out);

// `disabled_reason`: why updates are off; empty when they are on.
// `configured_model`: the runtime.model path, the rollback target when an
// update is installed and there is no previous one.
void FillUpdateStatus(const UpdateStatus& status,
                      const std::string& disabled_reason,
                      const std::string& configured_model,
                      wire::UpdateStatusResponse* out);

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_REQUEST_CODEC_H_
