// Plans where activation buffers live inside a worker's scratch region.
//
// Buffers whose lifetimes do not overlap may share memory. The planner is the
// greedy "largest first, lowest offset that fits" strategy of TFLite Micro's
// GreedyMemoryPlanner: deterministic, never worse than giving every buffer its
// own memory, and usually close to the peak of simultaneously live bytes.
#ifndef TERND_RUNTIME_PLANNER_H_
#define TERND_RUNTIME_PLANNER_H_

#include <cstddef>
#include <span>
#include <vector>

namespace ternd::runtime {

struct BufferRequest {
  size_t bytes;
  // Inclusive range of op indices during which the buffer holds live data.
  int first_op;
  int last_op;
};

struct MemoryPlan {
  std::vector<size_t> offsets;  // one per request, multiples of `alignment`
  size_t total_bytes = 0;       // bytes of scratch the plan needs
};

MemoryPlan PlanMemory(std::span<const BufferRequest> requests,
                      size_t alignment);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_PLANNER_H_
