#include "base/backoff.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <random>

#include "base/check.h"

namespace ternd {

using std::chrono::milliseconds;

Backoff::RandomSource Backoff::Seeded(uint64_t seed) {
  // shared_ptr: RandomSource is copyable, the generator's state is shared.
  auto rng = std::make_shared<std::mt19937_64>(seed);
  return [rng] { return (*rng)(); };
}

bool Backoff::Valid(const BackoffPolicy& p) {
  return p.floor.count() >= 0 && p.floor <= p.initial && p.initial <= p.max &&
         p.multiplier >= 1.0 && p.jitter >= 0.0 && p.jitter <= 1.0;
}

Backoff::Backoff(BackoffPolicy policy, RandomSource random)
    : policy_(policy), random_(std::move(random)) {
  TERND_CHECK(Valid(policy_));
  if (!random_) {
    std::random_device device;
    random_ = Seeded((static_cast<uint64_t>(device()) << 32) ^ device());
  }
}

milliseconds Backoff::CeilingAfter(int failures) const {
  const double max = static_cast<double>(policy_.max.count());
  double ceiling = static_cast<double>(policy_.initial.count());
  // Stops growing at max (or when it cannot grow), so this neither
  // overflows nor runs long however many failures are counted.
  for (int i = 0; i < failures && ceiling < max; ++i) {
    if (policy_.multiplier <= 1.0 || ceiling <= 0) break;
    ceiling *= policy_.multiplier;
  }
  return milliseconds(ceiling >= max ? policy_.max.count()
                                     : static_cast<int64_t>(ceiling));
}

milliseconds Backoff::Draw(int failures) {
  const int64_t high = CeilingAfter(failures).count();
  const int64_t spread =
      static_cast<int64_t>(policy_.jitter * static_cast<double>(high));
  const int64_t low = std::max(policy_.floor.count(), high - spread);
  if (low >= high) return milliseconds(high);
  // The modulo's bias is below 2^-31 for any span of milliseconds an
  // int64 holds in practice (spans below 2^33 ms, about 99 days).
  const uint64_t span = static_cast<uint64_t>(high - low) + 1;
  return milliseconds(low + static_cast<int64_t>(random_() % span));
}

milliseconds Backoff::Next() {
  const milliseconds delay = Draw(failures_);
  if (failures_ < std::numeric_limits<int>::max()) ++failures_;
  return delay;
}

}  // namespace ternd
