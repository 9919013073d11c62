// gputrain info: the build and the CUDA devices; --json: the devices as a JSON array for scripts.
#include <cstdio>
#include <string>
#include <vector>

#include "backend/engine_choice.hpp"
#include "cli/commands.hpp"
#include "core/json.hpp"
#include "gputrain/blas_info.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"

namespace gputrain::cli {

CLI::App* add_info_command(CLI::App& app, InfoArgs& a) {
  CLI::App* cmd = app.add_subcommand("info", "list the CUDA devices found");
  cmd->add_flag("--json", a.json,
                "print the devices as a JSON array ([] when there are none): index (as in "
                "--device cuda:N), name, memory_bytes, compute_capability");
  set_help_footer(cmd, "gputrain info --json", false);
  return cmd;
}

namespace {

// The GPU that `train --device cuda` (or auto) gives this process: ranks on one node take
// distinct GPUs by local rank.
std::string rank_device(const std::vector<DeviceInfo>& devices) {
  const int local_rank = g_world ? g_world->communicator().local_rank() : 0;
  const int local_size = g_world ? g_world->communicator().local_size() : 1;
  const std::string where = local_size > 1 ? " (local rank " + std::to_string(local_rank) + " of " +
                                                 std::to_string(local_size) + ")"
                                           : "";
  if (devices.empty()) return "cpu (no CUDA device)" + where;
  try {
    const DeviceInfo& d = devices[size_t(gpu_index_for("cuda", local_rank, devices))];
    return "cuda:" + std::to_string(d.index) + " " + d.name + where;
  } catch (const DeviceError& e) {
    return std::string("none: ") + e.what();
  }
}

}  // namespace

int run_info(const InfoArgs& a) {
  std::string why;
  const auto devices = cuda_devices(&why);
  if (a.json) {
    JsonValue list = JsonValue::array();
    for (const DeviceInfo& d : devices) {
      JsonValue o = JsonValue::object();
      o.set("index", d.index);
      o.set("name", d.name);
      o.set("memory_bytes", static_cast<int64_t>(d.memory_bytes));
      o.set("compute_capability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
      list.push_back(o);
    }
    std::printf("%s\n", list.dump().c_str());
    return kExitOk;
  }
  std::printf("gputrain %s — %s\n", GPUTRAIN_VERSION, cuda_build_versions().c_str());
  // The BLAS the dynamic linker gave this process, and its threading (the CPU backend sets it up
  // so that its OpenMP threads never oversubscribe the cores).
  std::printf("cpu: %s\n", describe_blas().c_str());
  std::printf("world: %s; %s\n", g_world ? g_world->communicator().describe().c_str() : "1 process",
              dist::collective_libraries().c_str());
  std::printf("this rank's device: %s\n", rank_device(devices).c_str());
  if (devices.empty()) {
    std::printf("no CUDA device found: %s (training runs on the CPU)\n", why.c_str());
    return kExitOk;
  }
  for (const DeviceInfo& d : devices)
    std::printf("cuda:%d  %s  %.1f GiB  compute capability %d.%d\n", d.index, d.name.c_str(),
                double(d.memory_bytes) / (1 << 30), d.cc_major, d.cc_minor);
  return kExitOk;
}

}  // namespace gputrain::cli
