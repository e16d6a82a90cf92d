// What the daemon tells systemd and the journal about itself.
//
// Notify() sends one sd_notify(3) message ("READY=1", "STATUS=...") to
// $NOTIFY_SOCKET and never blocks: libsystemd's sd_notify() waits when the
// receiver's datagram queue is full (a manager that does not read its
// socket), which would stall the serving loop. Here the message is dropped
// instead and counted (NotificationsDropped()). Without NOTIFY_SOCKET it
// does nothing.
//
// ModelEvent() logs a line about the served model: under systemd
// (JOURNAL_STREAM set) to the journal with the structured fields
// TERND_MODEL, TERND_MODEL_VERSION and TERND_REQUEST_ID, otherwise to
// stderr. Keep it off the per-request path (sd_journal_send can block when
// journald is backlogged) unless server.log_requests asks for it.
//
// Thread-safety: both may be called from any thread.
#ifndef TERND_DAEMON_NOTIFY_H_
#define TERND_DAEMON_NOTIFY_H_

#include <cstdint>

#include "base/log.h"

namespace ternd::runtime {
class LoadedModel;
}

namespace ternd::daemon {

void Notify(const char* format, ...) __attribute__((format(printf, 1, 2)));
uint64_t NotificationsDropped();

void ModelEvent(LogLevel level, const runtime::LoadedModel* model,
                uint64_t request_id, const char* format, ...)
    __attribute__((format(printf, 4, 5)));

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_NOTIFY_H_
