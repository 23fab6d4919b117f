// Small fixed-size thread pool with a blocking parallel_for.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace temseg {

/// Resolve a user thread count: <= 0 means std::thread::hardware_concurrency() (>= 1).
int resolve_num_threads(int num_threads);

/// Fixed pool of worker threads. parallel_for() blocks the caller (which also runs one
/// chunk) until every chunk has finished; the first exception thrown by any chunk is
/// captured (std::exception_ptr) and re-thrown in the caller after all chunks are done.
/// parallel_for must not be called from inside a chunk of the same pool.
class ThreadPool {
 public:
  /// Total parallelism including the calling thread: spawns num_threads - 1 workers.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  /// Split [begin, end) into at most `num_threads()` contiguous chunks of at least
  /// `min_chunk` items and call fn(lo, hi) for each chunk.
  void parallel_for(std::int64_t begin, std::int64_t end,
                    const std::function<void(std::int64_t, std::int64_t)>& fn,
                    std::int64_t min_chunk = 1);

 private:
  void worker_loop();

  std::vector<std::thread> workers_;
  std::deque<std::function<void()>> queue_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
};

/// parallel_for on `pool`, or inline (one chunk) when pool is null.
void parallel_for(ThreadPool* pool, std::int64_t begin, std::int64_t end,
                  const std::function<void(std::int64_t, std::int64_t)>& fn,
                  std::int64_t min_chunk = 1);

}  // namespace temseg
