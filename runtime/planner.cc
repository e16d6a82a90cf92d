#include "runtime/planner.h"

#include <algorithm>
#include <numeric>

namespace ternd::runtime {

MemoryPlan PlanMemory(std::span<const BufferRequest> requests,
                      size_t alignment) {
  const size_t count = requests.size();
  auto aligned = [alignment](size_t v) {
    return (v + alignment - 1) / alignment * alignment;
  };
  std::vector<size_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  // Largest first; ties by first use, then index, so plans are deterministic.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (requests[a].bytes != requests[b].bytes) {
      return requests[a].bytes > requests[b].bytes;
    }
    return requests[a].first_op < requests[b].first_op;
  });
  MemoryPlan plan;
  plan.offsets.assign(count, 0);
  std::vector<size_t> placed;
  for (size_t i : order) {
    const BufferRequest& r = requests[i];
    // Intervals already taken by buffers alive at the same time, by offset.
    std::vector<std::pair<size_t, size_t>> busy;
    for (size_t j : placed) {
      const BufferRequest& o = requests[j];
      if (o.first_op <= r.last_op && r.first_op <= o.last_op) {
        busy.emplace_back(plan.offsets[j], plan.offsets[j] + aligned(o.bytes));
      }
    }
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& [start, end] : busy) {
      if (offset + aligned(r.bytes) <= start) break;
      offset = std::max(offset, end);
    }
    plan.offsets[i] = offset;
    plan.total_bytes = std::max(plan.total_bytes, offset + aligned(r.bytes));
    placed.push_back(i);
  }
  return plan;
}

}  // namespace ternd::runtime
