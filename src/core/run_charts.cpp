#include "core/run_charts.hpp"

#include "core/curves.hpp"
#include "core/run_outputs.hpp"
#include "gputrain/trainer.hpp"
#ifdef GPUTRAIN_WITH_TENSORBOARD
#include "tensorboard/event_writer.hpp"
#endif

namespace gputrain {

RunCharts::RunCharts(const Config& config, const RunOutputs& outputs, bool writes, Warn warn)
    : warn_(std::move(warn)) {
  if (!writes) return;
  if (config.output_curves)
    curves_ = std::make_unique<CurvePlotter>(outputs.path(RunOutputs::kMetrics),
                                             outputs.path(RunOutputs::kCurves));
#ifdef GPUTRAIN_WITH_TENSORBOARD
  if (config.output_tensorboard) {
    try {
      events_ = std::make_unique<EventWriter>(outputs.dir());
    } catch (const std::exception& e) {
      events_failed(e);
    }
  }
#endif
}

RunCharts::~RunCharts() = default;

void RunCharts::events_failed(const std::exception& e) {
  events_.reset();
  warn_(std::string("TensorBoard events no longer written: ") + e.what());
}

void RunCharts::log(int64_t global_step, double loss, double accuracy, double lr) {
#ifdef GPUTRAIN_WITH_TENSORBOARD
  if (!events_) return;
  try {
    events_->scalars(global_step,
                     {{"train/loss", loss}, {"train/accuracy", accuracy}, {"train/lr", lr}});
  } catch (const std::exception& e) {
    events_failed(e);
  }
#else
  (void)global_step, (void)loss, (void)accuracy, (void)lr;
#endif
}

void RunCharts::epoch_done(const EpochMetrics& m) {
#ifdef GPUTRAIN_WITH_TENSORBOARD
  // The epoch's numbers at the epoch as step (as curves.png draws them).
  if (events_) {
    std::vector<std::pair<std::string, double>> values = {{"epoch/train_loss", m.train_loss},
                                                          {"epoch/train_acc", m.train_acc},
                                                          {"epoch/test_loss", m.test_loss},
                                                          {"epoch/test_acc", m.test_acc},
                                                          {"epoch/lr", m.lr},
                                                          {"epoch/images_per_s", m.images_per_s}};
    if (m.has_val) {
      values.push_back({"epoch/val_loss", m.val_loss});
      values.push_back({"epoch/val_acc", m.val_acc});
    }
    try {
      events_->scalars(m.epoch, values);
    } catch (const std::exception& e) {
      events_failed(e);
    }
  }
#else
  (void)m;
#endif
  if (curves_) warn_if(curves_->epoch_done());
}

void RunCharts::finish(const std::atomic<bool>* stop) {
  if (curves_) warn_if(curves_->finish(stop));
}

}  // namespace gputrain
