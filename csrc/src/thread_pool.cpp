#include "temseg/thread_pool.hpp"

#include <algorithm>
#include <exception>

namespace temseg {

int resolve_num_threads(int num_threads) {
  if (num_threads > 0) return num_threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

ThreadPool::ThreadPool(int num_threads) {
  const int n = resolve_num_threads(num_threads);
  workers_.reserve(static_cast<std::size_t>(n - 1));
  for (int i = 1; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();  // tasks never throw: parallel_for wraps them
  }
}

namespace {

// Completion latch shared by the chunks of one parallel_for call.
struct Join {
  std::mutex mutex;
  std::condition_variable cv;
  std::int64_t pending = 0;
  std::exception_ptr error;

  void run(const std::function<void(std::int64_t, std::int64_t)>& fn, std::int64_t lo,
           std::int64_t hi) {
    std::exception_ptr err;
    try {
      fn(lo, hi);
    } catch (...) {
      err = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (err && !error) error = err;
    if (--pending == 0) cv.notify_all();
  }
};

}  // namespace

void ThreadPool::parallel_for(std::int64_t begin, std::int64_t end,
                              const std::function<void(std::int64_t, std::int64_t)>& fn,
                              std::int64_t min_chunk) {
  const std::int64_t n = end - begin;
  if (n <= 0) return;
  min_chunk = std::max<std::int64_t>(1, min_chunk);
  const std::int64_t chunks =
      std::max<std::int64_t>(1, std::min<std::int64_t>(num_threads(), n / min_chunk));
  if (chunks == 1) {
    fn(begin, end);
    return;
  }
  Join join;
  join.pending = chunks;
  auto bound = [&](std::int64_t i) { return begin + n * i / chunks; };
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (std::int64_t i = 1; i < chunks; ++i) {
      const std::int64_t lo = bound(i), hi = bound(i + 1);
      queue_.emplace_back([&join, &fn, lo, hi] { join.run(fn, lo, hi); });
    }
  }
  cv_.notify_all();
  join.run(fn, bound(0), bound(1));  // the caller works too
  std::unique_lock<std::mutex> lock(join.mutex);
  join.cv.wait(lock, [&join] { return join.pending == 0; });
  if (join.error) std::rethrow_exception(join.error);
}

void parallel_for(ThreadPool* pool, std::int64_t begin, std::int64_t end,
                  const std::function<void(std::int64_t, std::int64_t)>& fn,
                  std::int64_t min_chunk) {
  if (pool) {
    pool->parallel_for(begin, end, fn, min_chunk);
  } else if (end > begin) {
    fn(begin, end);
  }
}

}  // namespace temseg
