// Runs one artifact download on an sd-event loop, as the daemon would, and
// prints its progress; the restart test kills it with SIGKILL mid-download
// and runs it again.
//
// Usage: ota_fetch_host DB CA RELEASE_PB [MAX_BYTES_PER_SECOND]
//   RELEASE_PB: a serialized ternd.ota.Release (urls, lengths, hashes).
// Prints "progress VERIFIED TOTAL" lines, then "done" (exit 0) or
// "failed: <reason>" (exit 1).
#include <systemd/sd-event.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/file.h"
#include "ota/fetcher.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s DB CA RELEASE_PB [BYTES_PER_SECOND]\n",
                 argv[0]);
    return 2;
  }
  auto bytes = ternd::ReadFile(argv[3]);
  ternd::ota::Release release;
  if (!bytes.ok() ||
      !release.ParseFromArray(bytes->data(), static_cast<int>(bytes->size()))) {
    std::fprintf(stderr, "cannot read the release %s\n", argv[3]);
    return 2;
  }
  ternd::ota::FetchOptions options;
  options.state_db = argv[1];
  options.ca_file = argv[2];
  options.retry_min_ms = 20;
  options.retry_max_ms = 200;
  if (argc > 4) options.max_bytes_per_second = std::atoll(argv[4]);
  // Small queue: with a rate limit, what is verified tracks what arrived.
  options.max_queued_bytes = release.chunk_size();

  sd_event* loop = nullptr;
  if (sd_event_new(&loop) < 0) return 2;
  int exit_code = 1;
  auto fetcher = ternd::ota::ArtifactFetcher::Start(
      loop, ternd::ota::FetchJobFromRelease(release), options,
      [](const ternd::ota::FetchProgress& p) {
        std::printf("progress %llu %llu\n",
                    static_cast<unsigned long long>(p.verified_bytes),
                    static_cast<unsigned long long>(p.total_bytes));
        std::fflush(stdout);
      },
      [&](const ternd::Status& s) {
        if (s.ok()) {
          std::printf("done\n");
          exit_code = 0;
        } else {
          std::printf("failed: %s\n", s.message());
        }
        std::fflush(stdout);
        sd_event_exit(loop, 0);
      });
  if (!fetcher.ok()) {
    std::printf("failed: %s\n", fetcher.status().message());
    return 1;
  }
  sd_event_loop(loop);
  fetcher->reset();
  sd_event_unref(loop);
  return exit_code;
}
