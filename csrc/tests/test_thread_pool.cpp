#include <doctest/doctest.h>

#include <atomic>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "temseg/thread_pool.hpp"

TEST_CASE("thread pool: parallel_for covers the range exactly once") {
  for (int threads : {1, 2, 4, 7}) {
    temseg::ThreadPool pool(threads);
    CHECK(pool.num_threads() == threads);
    std::vector<int> hits(1000, 0);
    pool.parallel_for(0, 1000, [&](std::int64_t lo, std::int64_t hi) {
      for (auto i = lo; i < hi; ++i) hits[static_cast<std::size_t>(i)]++;
    });
    for (int h : hits) CHECK(h == 1);
    pool.parallel_for(5, 5, [&](std::int64_t, std::int64_t) { FAIL("empty range ran"); });
  }
}

TEST_CASE("thread pool: exception in a worker is re-thrown in the caller") {
  temseg::ThreadPool pool(4);
  std::atomic<int> done{0};
  auto boom = [&](std::int64_t lo, std::int64_t) {
    if (lo != 0) throw std::runtime_error("worker failed");
    done++;
  };
  CHECK_THROWS_WITH_AS(pool.parallel_for(0, 4, boom), "worker failed", std::runtime_error);
  CHECK(done == 1);
  // The pool stays usable afterwards.
  std::atomic<std::int64_t> sum{0};
  pool.parallel_for(0, 100, [&](std::int64_t lo, std::int64_t hi) {
    for (auto i = lo; i < hi; ++i) sum += i;
  });
  CHECK(sum == 4950);
}
