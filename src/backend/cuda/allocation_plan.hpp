// The engine's planned device memory as one list (in the spirit of llm.c's TensorSpec list): each
// buffer allocated when the engine is built is declared once, with its name and size, by the part
// of the engine that owns it. The memory check sums the list and the allocation walks the same
// list, so the estimate cannot drift from what is allocated.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_resources.hpp"

namespace gputrain::cuda {

class AllocationList {
 public:
  struct Entry {
    std::string name;  // also the `what` of an out-of-memory error
    size_t bytes = 0;
    bool zeroed = true;  // zero-filled once, so no buffer ever holds NaN bit patterns
    std::function<void()> allocate;
    std::function<void(cudaStream_t)> zero;
  };

  // Declares `buffer` as `count` elements; nothing is allocated until allocate_all. The buffer must
  // outlive the call to allocate_all (members of the engine do).
  template <typename T>
  void add(DeviceBuffer<T>& buffer, size_t count, const std::string& name, bool zeroed = true) {
    DeviceBuffer<T>* b = &buffer;
    entries_.push_back(Entry{name, count * sizeof(T), zeroed,
                             [b, count, name] { b->allocate(count, name); },
                             [b](cudaStream_t s) {
                               if (b->bytes() > 0)
                                 GT_CHECK(cudaMemsetAsync(b->get(), 0, b->bytes(), s));
                             }});
  }

  size_t total_bytes() const {
    size_t sum = 0;
    for (const Entry& e : entries_) sum += e.bytes;
    return sum;
  }

  // Allocates every entry in order, then zero-fills those marked so (queued on `stream`).
  void allocate_all(cudaStream_t stream) const {
    for (const Entry& e : entries_) e.allocate();
    for (const Entry& e : entries_)
      if (e.zeroed) e.zero(stream);
  }

  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
};

// Throws DeviceError "<what> needs N MiB on <device>, M MiB free" when `needed` bytes exceed the
// device's free memory.
void ensure_fits(size_t needed, const std::string& what, const std::string& device);

}  // namespace gputrain::cuda
