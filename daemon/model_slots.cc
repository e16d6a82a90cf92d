#include "daemon/model_slots.h"

#include <pthread.h>
#include <sys/eventfd.h>

#include <cerrno>

#include "base/check.h"
#include "base/clock.h"
#include "base/log.h"
#include "daemon/notify.h"
#include "runtime/lm/lm_tokenizer.h"

namespace ternd::daemon {

Result<std::unique_ptr<ModelSlots>> ModelSlots::Create(
    sd_event* loop, const runtime::RuntimeOptions& options,
    const runtime::LmOptions& lm) {
  std::unique_ptr<ModelSlots> slots(new ModelSlots(loop));
  slots->lm_options_ = lm;
  TERND_ASSIGN_OR_RETURN(slots->runtime_, runtime::Runtime::Create(options));
  slots->loader_event_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!slots->loader_event_.valid()) {
    return ErrnoError(errno, "cannot create the model loader's eventfd");
  }
  sd_event_source* s = nullptr;
  const int r = sd_event_add_io(loop, &s, slots->loader_event_.get(), EPOLLIN,
                                &ModelSlots::OnLoader, slots.get());
  if (r < 0) return ErrnoError(-r, "cannot watch the model loader");
  sd_event_source_set_description(s, "model-loader");
  slots->loader_source_.reset(s);
  return slots;
}

ModelSlots::~ModelSlots() {
  // A model still being placed finishes first: it writes into the arena.
  if (loader_.joinable()) loader_.join();
}

Status ModelSlots::PlaceModel(int slot, const runtime::ModelFile& file) {
  if (!file.is_language_model()) {
    tokenizers_[slot].reset();
    return runtime_->Load(slot, file).status();
  }
  Result<std::unique_ptr<tokenizer::Tokenizer>> tok =
      lm::TokenizerOf(file.header().lm());
  if (!tok.ok()) {
    return Status(tok.status()).Prepend(file.origin() + ": tokenizer");
  }
  // The team may be replaced by LoadLm (a different size): no evaluation
  // may run meanwhile.
  std::lock_guard<std::mutex> l(lm_mutex_);
  Result<const runtime::LmModel*> loaded =
      runtime_->LoadLm(slot, file, lm_options_);
  if (!loaded.ok()) return loaded.status();
  tokenizers_[slot] = std::move(*tok);
  architectures_[slot] = file.header().lm().source_architecture();
  chat_templates_[slot] = file.header().lm().chat_template();
  return Status::Ok();
}

ServingModel ModelSlots::InSlot(int slot) const {
  if (const runtime::LmModel* lm = runtime_->lm(slot)) {
    return {lm->name(), lm->version()};
  }
  if (const runtime::LoadedModel* m = runtime_->model(slot)) {
    return {m->name(), m->version()};
  }
  return {};
}

Status ModelSlots::Place(int slot, const runtime::ModelFile& file,
                         bool require_golden) {
  TERND_RETURN_IF_ERROR(PlaceModel(slot, file));
  if (const runtime::LmModel* lm = runtime_->lm(slot)) {
    if (lm->has_golden()) {
      std::lock_guard<std::mutex> l(lm_mutex_);
      Status s = lm->CheckGolden();
      if (!s.ok()) {
        runtime_->Unload(slot);
        return s.Prepend("golden health check failed");
      }
    } else if (require_golden) {
      runtime_->Unload(slot);
      return FailedPrecondition(
          "language model '%s' has no golden tokens, so it cannot be "
          "health-checked; updates must carry them (ternctl convert records "
          "them)",
          lm->name());
    } else {
      TERND_LOG_WARNING(
          "language model '%s' (%s) has no golden tokens; it is served "
          "without a health check",
          lm->name(), file.origin().c_str());
    }
    return Status::Ok();
  }
  const runtime::LoadedModel* m = runtime_->model(slot);
  if (m->has_golden()) {
    // Executor 0's scratch of the model's own slot: no request uses this
    // slot yet.
    Status s = m->CheckGolden(0);
    if (!s.ok()) {
      runtime_->Unload(slot);
      return s.Prepend("golden health check failed");
    }
  } else if (require_golden) {
    runtime_->Unload(slot);
    return FailedPrecondition(
        "model '%s' has no golden input/output pair, so it cannot be "
        "health-checked; updates must carry one",
        m->name());
  } else {
    TERND_LOG_WARNING(
        "model '%s' (%s) has no golden pair; it is served "
        "without a health check",
        m->name(), file.origin().c_str());
  }
  return Status::Ok();
}

Status ModelSlots::PlaceFirst(runtime::ModelFile file, bool require_golden) {
  TERND_RETURN_IF_ERROR(Place(0, file, require_golden));
  active_slot_ = 0;
  slot_load_[0] = ++loads_;
  if (runtime_->slot_count() == 1) cold_file_ = std::move(file);
  serving_ = InSlot(0);
  return Status::Ok();
}

ModelSlots::Hold ModelSlots::Acquire() {
  TERND_CHECK(serving_any());
  const runtime::LoadedModel* m = usable();
  ++slot_holds_[active_slot_];
  return {m, active_slot_, slot_load_[active_slot_]};
}

void ModelSlots::Release(int slot) {
  TERND_CHECK(slot_holds_[slot] > 0);
  if (--slot_holds_[slot] == 0 && change_ && change_target_ == slot) {
    StartLoaderWhenFree();
  }
}

Status ModelSlots::ChangeModel(ModelChange change) {
  if (stopped_) {
    return Errorf(StatusCode::kUnavailable, "the daemon is shutting down");
  }
  if (change_) {
    return FailedPrecondition("another model change (%s) is running",
                              changing_.c_str());
  }
  if (staged_slot_ >= 0) {
    return FailedPrecondition(
        "a staged model waits in the idle slot; activate or discard it "
        "first");
  }
  const bool cold = runtime_->slot_count() == 1;
  if (cold) change.swap_when_staged = true;  // one slot: staging is swapping
  changing_ = change.what;
  change_ = std::move(change);
  change_target_ = cold ? 0 : 1 - active_slot_;
  // Cold: from now on no new request may use the slot being replaced.
  if (cold) cold_loading_ = true;
  Notify("STATUS=Loading model (%s)", changing_.c_str());
  StartLoaderWhenFree();
  return Status::Ok();
}

// Starts the loader once no request holds the slot the model goes into:
// the idle slot (hot swap), or the only slot (cold swap). Otherwise the
// last Release() of that slot calls this again.
void ModelSlots::StartLoaderWhenFree() {
  if (!change_ || loader_.joinable()) return;
  const int target = change_target_;
  if (slot_holds_[target] > 0) return;
  if (runtime_->slot_count() == 1) cold_previous_ = std::move(cold_file_);
  loader_status_ = Status::Ok();
  // Off the loop: producing (reading, decompressing, hashing, parsing),
  // placing and health-checking a model takes milliseconds to seconds.
  loader_ = std::thread([this, target]() {
    pthread_setname_np(pthread_self(), "ternd-loader");
    Result<runtime::ModelFile> file = change_->produce();
    if (!file.ok()) {
      loader_status_ = file.status();
    } else {
      loader_status_ = Place(target, *file, change_->require_golden);
      if (loader_status_.ok() && runtime_->slot_count() == 1) {
        loader_file_ = std::move(*file);
      }
    }
    const uint64_t one = 1;
    TERND_CHECK(write(loader_event_.get(), &one, sizeof(one)) == sizeof(one));
  });
}

void ModelSlots::OnLoaderDone() {
  uint64_t count;
  if (read(loader_event_.get(), &count, sizeof(count)) < 0) return;
  if (!loader_.joinable()) return;
  loader_.join();
  if (!loader_status_.ok()) {
    if (cold_previous_) {
      // The single slot may hold a half-placed model: put the old one back.
      Status restored = PlaceModel(0, *cold_previous_);
      TERND_CHECK(restored.ok());  // it fit and loaded before
      slot_load_[0] = ++loads_;
      cold_file_ = std::move(cold_previous_);
      cold_previous_.reset();
    }
    FinishChange(loader_status_);
    return;
  }
  slot_load_[change_target_] = ++loads_;
  if (runtime_->slot_count() == 1) {
    cold_file_ = std::move(loader_file_);
    loader_file_.reset();
  }
  cold_previous_.reset();
  staged_slot_ = change_target_;
  if (change_->swap_when_staged) {
    Result<int64_t> swapped = ActivateStaged();
    if (!swapped.ok()) {
      FinishChange(swapped.status());
      return;
    }
  }
  FinishChange(Status::Ok());
}

// Runs on the loop from OnLoaderDone, never inside a caller's call: `done`
// may start the next change or activate the staged model.
void ModelSlots::FinishChange(const Status& status) {
  cold_loading_ = false;
  std::function<void(const Status&)> done = std::move(change_->done);
  change_.reset();
  changing_.clear();
  change_target_ = -1;
  if (done) done(status);
}

Result<int64_t> ModelSlots::ActivateStaged() {
  if (staged_slot_ < 0) return FailedPrecondition("no model is staged");
  const int64_t t0 = MonotonicNs();
  const ServingModel old =
      staged_slot_ == active_slot_ ? serving_ : InSlot(active_slot_);
  // Requests dispatched from now on use the new slot; those already running
  // finish on the old one, which stays intact until the next change.
  active_slot_ = staged_slot_;
  staged_slot_ = -1;
  const int64_t swap_ns = MonotonicNs() - t0;
  const ServingModel now = InSlot(active_slot_);
  ModelEvent(LogLevel::kNotice, runtime_->model(active_slot_), 0,
             "now serving model '%s' version %llu (was '%s' version %llu; "
             "swap took %lld ns)",
             now.name.c_str(), static_cast<unsigned long long>(now.version),
             old.name.c_str(), static_cast<unsigned long long>(old.version),
             static_cast<long long>(swap_ns));
  Notify("STATUS=Serving model '%s' version %llu", now.name.c_str(),
         static_cast<unsigned long long>(now.version));
  serving_ = now;
  notify_.Schedule();
  return swap_ns;
}

void ModelSlots::DiscardStaged() {
  if (staged_slot_ < 0 || staged_slot_ == active_slot_) {
    staged_slot_ = -1;
    return;
  }
  runtime_->Unload(staged_slot_);
  staged_slot_ = -1;
}

int ModelSlots::OnLoader(sd_event_source*, int, uint32_t, void* self) {
  static_cast<ModelSlots*>(self)->OnLoaderDone();
  return 0;
}

}  // namespace ternd::daemon
