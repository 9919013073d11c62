// ImageFolder data sets: list the class folders, decode every image on all cores (once: the
// decoded set is cached beside the data), and check what a user's folder tree can get wrong.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

#include "core/json.hpp"
#include "data/data_dir.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/images.hpp"

namespace gputrain {
namespace {

namespace fs = std::filesystem;

constexpr char kCacheMagic[8] = {'G', 'T', 'I', 'M', 'G', 'C', '0', '1'};

struct ImageFile {
  std::string path;
  int32_t label = 0;
  uintmax_t size = 0;
  int64_t mtime_ns = 0;
};

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// Size and modification time (ns since the Unix epoch) from one stat: the listing of a large
// folder is most of what a run that finds the cache spends on loading.
bool size_and_mtime(const std::string& path, uintmax_t& size, int64_t& mtime_ns) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  size = uintmax_t(st.st_size);
  mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + int64_t(st.st_mtim.tv_nsec);
  return true;
}

std::vector<std::string> sorted_subfolders(const fs::path& split) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(split, ec))
    if (entry.is_directory() && entry.path().filename().string()[0] != '.')
      names.push_back(entry.path().filename().string());
  if (ec) throw DataError(split.string() + ": cannot list (" + ec.message() + ")");
  std::sort(names.begin(), names.end());
  return names;
}

// The images of one split, class by class (classes in `classes` order), files sorted by name.
std::vector<ImageFile> list_split(const fs::path& dir, const std::string& split,
                                  const std::vector<std::string>& classes) {
  const fs::path root = dir / split;
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    throw DataError(root.string() +
                    ": no such folder, expected data.dir to hold train/<class>/ and "
                    "test/<class>/ folders of PNG or JPEG images (data.format: folder)");
  const std::vector<std::string> found = sorted_subfolders(root);
  if (found.empty())
    throw DataError(root.string() + ": no class folders, expected one folder of images per class");
  for (const std::string& name : found)
    if (!std::binary_search(classes.begin(), classes.end(), name))
      throw DataError((root / name).string() + ": class '" + name +
                      "' is not a class of the training set (" + (dir / "train").string() + ")");
  std::vector<ImageFile> files;
  for (const std::string& name : found) {
    const int32_t label =
        int32_t(std::lower_bound(classes.begin(), classes.end(), name) - classes.begin());
    std::vector<ImageFile> in_class;
    for (const auto& entry : fs::directory_iterator(root / name, ec)) {
      if (!entry.is_regular_file() || !is_image_name(entry.path())) continue;
      ImageFile file{entry.path().string(), label};
      if (!size_and_mtime(file.path, file.size, file.mtime_ns)) {
        ec = std::error_code(errno, std::generic_category());
        break;
      }
      in_class.push_back(std::move(file));
    }
    if (ec) throw DataError((root / name).string() + ": cannot list (" + ec.message() + ")");
    if (in_class.empty())
      throw DataError((root / name).string() +
                      ": empty class folder, expected .png, .jpg or .jpeg images");
    std::sort(in_class.begin(), in_class.end(),
              [](const ImageFile& a, const ImageFile& b) { return a.path < b.path; });
    files.insert(files.end(), in_class.begin(), in_class.end());
  }
  return files;
}

uint64_t fnv1a(const std::string& text, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return h;
}

// What a cache depends on: the conversion settings, then every file's name, size and time.
std::string settings_key(const ImageFolderOptions& o) {
  return "v1 " + std::to_string(o.channels) + "x" + std::to_string(o.height) + "x" +
         std::to_string(o.width) + " resize=" + std::to_string(o.resize) +
         " skip=" + std::to_string(o.skip_bad_images);
}

std::string listing_key(const std::vector<ImageFile>& files) {
  std::string key;
  for (const ImageFile& f : files)
    key += f.path + "\t" + std::to_string(f.label) + "\t" + std::to_string(f.size) + "\t" +
           std::to_string(f.mtime_ns) + "\n";
  return key;
}

struct Decoded {
  ImageSet set;
  std::vector<std::string> skipped;  // "path: reason"
};

// Decodes `files` on all cores; the first error in file order is thrown (or, with
// skip_bad_images, unreadable images are left out and listed).
Decoded decode_all(const std::vector<ImageFile>& files, const ImageFolderOptions& o,
                   const std::string& what, std::atomic<int64_t>& done) {
  const size_t image_bytes = size_t(o.channels) * o.height * o.width;
  std::vector<uint8_t> pixels(files.size() * image_bytes);
  std::vector<std::string> errors(files.size());
  std::vector<char> size_error(files.size(), 0);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < files.size();) {
      try {
        const RgbImage image = decode_image_file(files[i].path);
        try {
          image_to_input(image, files[i].path, o.channels, o.height, o.width, o.resize,
                         pixels.data() + i * image_bytes);
        } catch (const DataError& e) {
          errors[i] = e.what();
          size_error[i] = 1;
        }
      } catch (const DataError& e) {
        errors[i] = e.what();
      } catch (const std::exception& e) {
        errors[i] = files[i].path + ": " + e.what();
      }
      done.fetch_add(1);
    }
  };
  const unsigned threads = std::max(1u, std::min(std::thread::hardware_concurrency(), 64u));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  (void)what;

  Decoded d;
  d.set.channels = o.channels;
  d.set.height = o.height;
  d.set.width = o.width;
  size_t kept = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    if (!errors[i].empty()) {
      // A wrong size is a property of the data set, not damage: never skipped silently.
      if (!o.skip_bad_images || size_error[i]) throw DataError(errors[i]);
      d.skipped.push_back(errors[i]);
      continue;
    }
    if (kept != i)
      std::memcpy(pixels.data() + kept * image_bytes, pixels.data() + i * image_bytes, image_bytes);
    d.set.labels.push_back(files[i].label);
    ++kept;
  }
  pixels.resize(kept * image_bytes);
  d.set.pixels = std::move(pixels);
  d.set.count = int64_t(kept);
  return d;
}

// ---- the cache: magic, u64 header length, header JSON, then train and test pixels and labels ----

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError(path + ": " + std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
  }
}

void write_cache(const std::string& path, const Dataset& ds, const std::string& settings,
                 size_t skipped) {
  JsonValue header = JsonValue::object();
  header.set("settings", settings);
  JsonValue classes = JsonValue::array();
  for (const std::string& c : ds.class_names) classes.push_back(c);
  header.set("classes", classes);
  header.set("train", ds.train.count);
  header.set("test", ds.test.count);
  header.set("skipped", int64_t(skipped));
  const std::string text = header.dump();
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError(tmp + ": " + std::strerror(errno));
  try {
    const uint64_t len = text.size();
    write_all(fd, kCacheMagic, sizeof kCacheMagic, tmp);
    write_all(fd, &len, sizeof len, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    for (const ImageSet* s : {&ds.train, &ds.test}) {
      write_all(fd, s->pixels.data(), s->pixels.size(), tmp);
      write_all(fd, s->labels.data(), s->labels.size() * sizeof(int32_t), tmp);
    }
    if (::fsync(fd) != 0) throw IoError(tmp + ": " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw IoError(path + ": " + why);
  }
}

// The settings line of a cache file, or empty when it is not one.
std::string cache_settings(const std::string& path, JsonValue* header_out = nullptr) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return "";
  char magic[8];
  uint64_t len = 0;
  if (std::fread(magic, 1, 8, f.get()) != 8 || std::memcmp(magic, kCacheMagic, 8) != 0) return "";
  if (std::fread(&len, sizeof len, 1, f.get()) != 1 || len > (1u << 26)) return "";
  std::string text(len, '\0');
  if (std::fread(&text[0], 1, len, f.get()) != len) return "";
  try {
    JsonValue header = parse_json(text);
    const JsonValue* s = header.find("settings");
    if (!s || !s->is_string()) return "";
    if (header_out) *header_out = header;
    return s->as_string();
  } catch (const std::exception&) {
    return "";
  }
}

// A cache that matches in every respect, or false (then it is rebuilt).
bool read_cache(const std::string& path, const ImageFolderOptions& o, const std::string& settings,
                Dataset& ds, int64_t& skipped) {
  JsonValue header;
  if (cache_settings(path, &header) != settings) return false;
  try {
    const JsonValue *classes = header.find("classes"), *train = header.find("train"),
                    *test = header.find("test"), *skip = header.find("skipped");
    if (!classes || !classes->is_array() || !train || !train->is_integer() || !test ||
        !test->is_integer() || !skip || !skip->is_integer())
      return false;
    ds.class_names.clear();
    for (const JsonValue& c : classes->as_array()) ds.class_names.push_back(c.as_string());
    skipped = skip->as_int64();
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    uint64_t len = 0;
    if (!f || std::fseek(f.get(), 8, SEEK_SET) != 0 ||
        std::fread(&len, sizeof len, 1, f.get()) != 1 ||
        std::fseek(f.get(), long(16 + len), SEEK_SET) != 0)
      return false;
    const size_t image_bytes = size_t(o.channels) * o.height * o.width;
    for (auto [set, count] : {std::pair<ImageSet*, int64_t>{&ds.train, train->as_int64()},
                              std::pair<ImageSet*, int64_t>{&ds.test, test->as_int64()}}) {
      set->channels = o.channels;
      set->height = o.height;
      set->width = o.width;
      set->count = count;
      set->pixels.resize(size_t(count) * image_bytes);
      set->labels.resize(size_t(count));
      if (std::fread(set->pixels.data(), 1, set->pixels.size(), f.get()) != set->pixels.size() ||
          std::fread(set->labels.data(), sizeof(int32_t), set->labels.size(), f.get()) !=
              set->labels.size())
        return false;
      for (int32_t l : set->labels)
        if (l < 0 || l >= int32_t(ds.class_names.size())) return false;
    }
    return std::fgetc(f.get()) == EOF;
  } catch (const std::exception&) {
    return false;
  }
}

void apply_limit(ImageSet& set, int64_t limit, const char* key, const std::string& where) {
  if (limit < 0)
    throw DataError(std::string(key) + "=" + std::to_string(limit) +
                    ": negative, expected 0 (all images) or a positive count");
  if (limit > set.count)
    throw DataError(std::string(key) + "=" + std::to_string(limit) + " but " + where + " holds " +
                    std::to_string(set.count) + " images, expected at most " +
                    std::to_string(set.count) + " (or 0 = all)");
  if (limit == 0 || limit == set.count) return;
  set.count = limit;
  set.pixels.resize(size_t(limit) * set.image_size());
  set.labels.resize(size_t(limit));
}

}  // namespace

Dataset load_image_folder_dataset(const std::string& dir, const ImageFolderOptions& o) {
  check_data_dir(dir, "train/<class>/ and test/<class>/ folders of images (data.format: folder)");
  if (o.channels != 1 && o.channels != 3)
    throw DataError(dir + ": image folders give 1 (grey) or 3 (RGB) channels, model.input has " +
                    std::to_string(o.channels));
  const auto start = std::chrono::steady_clock::now();
  // The loading time in the messages: what the cache saves shows (listing and hashing included).
  auto seconds = [&start] {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char text[32];
    std::snprintf(text, sizeof text, "%.3f s", s);
    return std::string(text);
  };
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root / "train", ec))
    throw DataError((root / "train").string() +
                    ": no such folder, expected data.dir to hold train/<class>/ and "
                    "test/<class>/ folders of PNG or JPEG images (data.format: folder)");
  Dataset ds;
  ds.class_names = sorted_subfolders(root / "train");
  if (ds.class_names.empty())
    throw DataError((root / "train").string() +
                    ": no class folders, expected one folder of images per class");
  if (o.num_classes > 0 && int(ds.class_names.size()) != o.num_classes)
    throw DataError((root / "train").string() + " has " + std::to_string(ds.class_names.size()) +
                    " class folders but the model's last layer has " +
                    std::to_string(o.num_classes) +
                    " outputs, expected as many class folders as outputs");
  const std::vector<ImageFile> train_files = list_split(root, "train", ds.class_names);
  const std::vector<ImageFile> test_files = list_split(root, "test", ds.class_names);

  const std::string settings = settings_key(o);
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx",
                (unsigned long long)fnv1a(listing_key(test_files),
                                          fnv1a(listing_key(train_files), fnv1a(settings))));
  const std::string cache_path =
      (root / (std::string(".gputrain-cache-") + hash + ".bin")).string();
  int64_t skipped_count = 0;
  Dataset cached;
  if (read_cache(cache_path, o, settings, cached, skipped_count) &&
      cached.class_names == ds.class_names) {
    if (o.info)
      o.info("images from the cache " + cache_path + " (" + std::to_string(cached.train.count) +
             " training, " + std::to_string(cached.test.count) + " test) in " + seconds());
    if (skipped_count > 0 && o.warning)
      o.warning(std::to_string(skipped_count) +
                " unreadable images were skipped when the cache was built (data.skip_bad_images)");
    ds = std::move(cached);
  } else {
    const int64_t total = int64_t(train_files.size() + test_files.size());
    std::atomic<int64_t> done{0};
    std::atomic<bool> finished{false};
    // Progress once a second after the first second, from a thread of its own.
    std::thread reporter([&] {
      const auto start = std::chrono::steady_clock::now();
      auto next = start + std::chrono::seconds(1);
      while (!finished.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (std::chrono::steady_clock::now() >= next && !finished.load()) {
          next += std::chrono::seconds(1);
          if (o.info)
            o.info("decoding images in " + dir + ": " + std::to_string(done.load()) + " of " +
                   std::to_string(total));
        }
      }
    });
    Decoded train, test;
    try {
      train = decode_all(train_files, o, "train", done);
      test = decode_all(test_files, o, "test", done);
    } catch (...) {
      finished = true;
      reporter.join();
      throw;
    }
    finished = true;
    reporter.join();
    std::vector<std::string> skipped = train.skipped;
    skipped.insert(skipped.end(), test.skipped.begin(), test.skipped.end());
    if (!skipped.empty() && o.warning) {
      std::string list;
      for (size_t i = 0; i < skipped.size() && i < 3; ++i) list += (i ? "; " : "") + skipped[i];
      o.warning("skipped " + std::to_string(skipped.size()) +
                " unreadable images (data.skip_bad_images): " + list +
                (skipped.size() > 3 ? "; …" : ""));
    }
    ds.train = std::move(train.set);
    ds.test = std::move(test.set);
    if (ds.train.count == 0) throw DataError((root / "train").string() + ": no readable images");
    if (ds.test.count == 0) throw DataError((root / "test").string() + ": no readable images");
    // Earlier caches of the same settings are stale now (their files changed): replace them.
    for (const auto& entry : fs::directory_iterator(root, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(".gputrain-cache-", 0) == 0 && entry.path().string() != cache_path &&
          cache_settings(entry.path().string()) == settings)
        fs::remove(entry.path(), ec);
    }
    bool cache_written = true;
    try {
      write_cache(cache_path, ds, settings, skipped.size());
    } catch (const IoError& e) {
      cache_written = false;
      if (o.warning)
        o.warning(std::string("could not write the decoded-image cache (loading will decode "
                              "again next time): ") +
                  e.what());
    }
    if (o.info)
      o.info("decoded " + std::to_string(ds.train.count + ds.test.count) + " images from " + dir +
             " in " + seconds() +
             (cache_written ? " (cached for the next run in " + cache_path + ")" : ""));
  }
  apply_limit(ds.train, o.train_limit, "data.train_limit", (root / "train").string());
  apply_limit(ds.test, o.test_limit, "data.test_limit", (root / "test").string());
  return ds;
}

}  // namespace gputrain
