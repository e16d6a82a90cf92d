// The daemon's only model host: the runtime's arena slots, the loader
// thread that produces and places a model off the event loop, hot and cold
// swap, and how many requests use each slot.
//
//   hot swap (two slots):  active slot serves | idle slot takes the new
//                          model; the swap flips which one serves
//   cold swap (one slot):  the slot is emptied and refilled; meanwhile
//                          usable() is null and callers answer UNAVAILABLE
//
// A change (ChangeModel) waits until no request holds the slot it goes
// into (Acquire/Release count them; the last Release starts the loader,
// no polling), then runs the model's producer, Load and golden health check
// on the loader thread, then, back on the loop, swaps or keeps the model
// staged for ActivateStaged(). A failed cold change puts the previous model
// back. The change's `done` and the observer run on the loop, never from
// inside a call made into this class.
//
// Thread-safety: every method on the loop's thread. The loader thread
// touches only the slot it fills and reports through an eventfd.
#ifndef TERND_DAEMON_MODEL_SLOTS_H_
#define TERND_DAEMON_MODEL_SLOTS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/event_loop.h"
#include "base/fd.h"
#include "base/status.h"
#include "daemon/model_host.h"
#include "runtime/format.h"
#include "runtime/lm/lm_model.h"
#include "runtime/runtime.h"
#include "runtime/tokenizer/tokenizer.h"

namespace ternd::daemon {

class ModelSlots final : public ModelHost {
 public:
  // `runtime` says the arena size, slots (2: hot, 1: cold), executors and
  // kernel.
  // `lm` sizes language models (llm.* keys) when one is placed.
  static Result<std::unique_ptr<ModelSlots>> Create(
      sd_event* loop, const runtime::RuntimeOptions& runtime,
      const runtime::LmOptions& lm = {});
  ~ModelSlots() override;  // waits for a loader thread still placing
  ModelSlots(const ModelSlots&) = delete;
  ModelSlots& operator=(const ModelSlots&) = delete;

  // Start-up only (blocking, before anything serves): places `file` into
  // slot 0 and runs its golden health check.
  Status PlaceFirst(runtime::ModelFile file, bool require_golden);

  // The graph model requests may use now; null while a cold swap rewrites
  // the only slot, or when a language model serves.
  const runtime::LoadedModel* usable() const {
    return cold_loading_ ? nullptr : runtime_->model(active_slot_);
  }
  // The language model that serves now, and its tokenizer; null as above
  // or when a graph model serves.
  const runtime::LmModel* usable_lm() const {
    return cold_loading_ ? nullptr : runtime_->lm(active_slot_);
  }
  const tokenizer::Tokenizer* tokenizer() const {
    return usable_lm() ? tokenizers_[active_slot_].get() : nullptr;
  }
  // The GGUF architecture of the serving language model.
  const std::string& lm_architecture() const {
    return architectures_[active_slot_];
  }
  // The serving language model's chat template (may be empty).
  const std::string& lm_chat_template() const {
    return chat_templates_[active_slot_];
  }
  // Either kind serves.
  bool serving_any() const { return usable() || usable_lm(); }
  // Language models share the runtime's thread team: evaluation (the
  // generator) and the health check of a model being loaded take this.
  std::mutex* lm_mutex() { return &lm_mutex_; }
  // A request's hold on the active slot, from dispatch to answer.
  struct Hold {
    const runtime::LoadedModel* model;  // null for a language model
    int slot;
    // Which placement this is (every load counts one up): models sit at
    // their slot's base address, so `model` alone does not tell a reloaded
    // model from the one before it.
    uint64_t load;
  };
  // REQUIRES: serving_any().
  Hold Acquire();
  // A change waiting for `slot` starts when its last hold goes.
  void Release(int slot);

  // Called on the loop (on a later iteration) after the serving model
  // changed: metrics, STATUS= lines.
  void SetObserver(std::function<void()> changed) {
    observer_ = std::move(changed);
  }
  // From now on ChangeModel answers UNAVAILABLE (the daemon drains).
  void StopChanges() { stopped_ = true; }

  // What a change in progress is about ("reload of x.tern"); empty: none.
  const std::string& changing() const { return changing_; }
  bool has_staged() const { return staged_slot_ >= 0; }
  // The graph model waiting in the idle slot for ActivateStaged (hot swap;
  // shadow validation runs it); null when none or a language model waits.
  const runtime::LoadedModel* staged() const {
    return staged_slot_ >= 0 && staged_slot_ != active_slot_
               ? runtime_->model(staged_slot_)
               : nullptr;
  }
  const runtime::Runtime& runtime() const { return *runtime_; }

  // ModelHost.
  Status ChangeModel(ModelChange change) override;
  Result<int64_t> ActivateStaged() override;
  void DiscardStaged() override;
  ServingModel serving() const override { return serving_; }

 private:
  explicit ModelSlots(sd_event* loop)
      : loop_(loop), notify_(loop, "model-changed", [this]() {
          if (observer_) observer_();
        }) {}
  // Places `file` into `slot` and runs its golden check; on failure the
  // slot is empty. Loader thread (or start-up).
  Status Place(int slot, const runtime::ModelFile& file, bool require_golden);
  // Either kind of model into `slot`, without the health check.
  Status PlaceModel(int slot, const runtime::ModelFile& file);
  // Name and version of what `slot` holds.
  ServingModel InSlot(int slot) const;
  void StartLoaderWhenFree();
  void OnLoaderDone();
  void FinishChange(const Status& status);
  void ServingChanged();
  static int OnLoader(sd_event_source*, int, uint32_t, void* self);

  sd_event* loop_;
  std::unique_ptr<runtime::Runtime> runtime_;
  runtime::LmOptions lm_options_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizers_[2];
  std::string architectures_[2];
  std::string chat_templates_[2];
  std::mutex lm_mutex_;
  int active_slot_ = 0;
  int slot_holds_[2] = {0, 0};
  uint64_t slot_load_[2] = {0, 0};
  uint64_t loads_ = 0;
  ServingModel serving_;
  std::function<void()> observer_;
  LoopTask notify_;
  bool stopped_ = false;

  // The change in progress (at most one) and the thread that places it.
  std::optional<ModelChange> change_;
  std::string changing_;
  int change_target_ = -1;
  int staged_slot_ = -1;       // a placed model waiting for ActivateStaged
  bool cold_loading_ = false;  // one slot, being replaced
  // Cold swap only: the served model's file, to restore it when a
  // replacement fails after overwriting the single slot.
  std::optional<runtime::ModelFile> cold_file_;
  std::optional<runtime::ModelFile> cold_previous_;
  std::optional<runtime::ModelFile> loader_file_;
  std::thread loader_;
  UniqueFd loader_event_;
  EventSource loader_source_;
  Status loader_status_;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_MODEL_SLOTS_H_
