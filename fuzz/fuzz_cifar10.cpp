// libFuzzer target: the CIFAR-10 reader (load_cifar10_dataset on a folder). The input is split into
// the six files (data_batch_1..5.bin, test_batch.bin) at offsets the first 6 bytes choose. Any
// input loads (labels < 10, sizes consistent) or is rejected with DataError.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz_support.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/errors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  const char* names[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                          "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
  // Byte i: file i gets (bits 0-1) whole 3073-byte records, plus, when bit 7 is set, a ragged
  // (bits 2-6) extra bytes; the last file gets the rest.
  const uint8_t* body = data + 6;
  size_t left = size - 6;
  for (int i = 0; i < 6; ++i) {
    const size_t want = size_t(data[i] & 3) * 3073 + ((data[i] & 0x80) ? (data[i] >> 2) & 31 : 0);
    const size_t n = i == 5 ? left : std::min(left, want);
    gputrain::fuzz::write_file(names[i], body, n);
    body += n;
    left -= n;
  }
  try {
    const gputrain::Dataset d =
        gputrain::load_cifar10_dataset(gputrain::fuzz::scratch_dir(), 0, 0, 10);
    for (const gputrain::ImageSet* set : {&d.train, &d.test}) {
      if (set->pixels.size() != size_t(set->count) * 3072 ||
          set->labels.size() != size_t(set->count))
        std::abort();
      for (int32_t label : set->labels)
        if (label < 0 || label >= 10) std::abort();
    }
  } catch (const gputrain::DataError&) {
  }
  return 0;
}
