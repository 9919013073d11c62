// Test tool of the parity suite (not installed): the learning rate of every step of a run, as the
// trainer's step table has it, one line per global step ("<step> <lr in double> <lr as stored>").
//   gputrain_schedule_table CONFIG TRAIN_IMAGES [KEY=VALUE ...]
// The config's schedule, optimizer.lr, train.batch_size and train.epochs go through the same
// schedule_spec / step_table the trainer uses; TRAIN_IMAGES stands in for the data set's size.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "gputrain/config.hpp"
#include "gputrain/optimizer.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s CONFIG TRAIN_IMAGES [KEY=VALUE ...]\n", argv[0]);
    return 2;
  }
  try {
    const std::vector<std::string> overrides(argv + 3, argv + argc);
    const gputrain::Config config = gputrain::load_config(argv[1], overrides);
    const int64_t images = std::stoll(argv[2]);
    const int64_t batch = config.train.batch_size;
    const int64_t steps_per_epoch = (images + batch - 1) / batch;
    const int64_t total = steps_per_epoch * config.train.epochs;
    const gputrain::ScheduleSpec schedule =
        gputrain::schedule_spec(config.schedule, config.optimizer.lr, steps_per_epoch);
    const auto table =
        gputrain::step_table(gputrain::optimizer_spec(config.optimizer), schedule, total);
    for (int64_t s = 0; s < total; ++s)
      std::printf("%lld %.17g %.9g\n", static_cast<long long>(s),
                  gputrain::scheduled_lr(schedule, s, total), double(table[size_t(s)].lr));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
