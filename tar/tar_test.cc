#include <fcntl.h>
#include <gmock/gmock.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "compress/compress.h"
#include "tar/tar_reader.h"
#include "tar/tar_writer.h"

namespace lazycrypt::tar {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------------
// Helpers

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tar_test.XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << strerror(errno);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

int RunShell(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

// Returns at most `max_piece` bytes per Read, to exercise short reads from the source.
using TrickleInputStream = MemoryInputStream;

// Concatenates pieces, some of them generated runs of zeros (for multi-GiB entries).
class PiecesInputStream final : public InputStream {
 public:
  void AddBytes(std::vector<uint8_t> b) { pieces_.push_back({std::move(b), 0}); }
  void AddZeros(uint64_t n) { pieces_.push_back({{}, n}); }
  Result<size_t> Read(MutableByteSpan out) override {
    while (index_ < pieces_.size()) {
      Piece& p = pieces_[index_];
      uint64_t len = p.zeros > 0 ? p.zeros : p.bytes.size();
      if (pos_ == len) {
        ++index_;
        pos_ = 0;
        continue;
      }
      size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), len - pos_));
      if (p.zeros > 0) {
        std::memset(out.data(), 0, n);
      } else {
        std::memcpy(out.data(), p.bytes.data() + pos_, n);
      }
      pos_ += n;
      return n;
    }
    return size_t{0};
  }

 private:
  struct Piece {
    std::vector<uint8_t> bytes;
    uint64_t zeros;
  };
  std::vector<Piece> pieces_;
  size_t index_ = 0;
  uint64_t pos_ = 0;
};

uint64_t Pad512(uint64_t n) { return (n + 511) / 512 * 512; }

struct Parsed {
  std::vector<Entry> entries;
  std::vector<std::vector<uint8_t>> data;
  std::vector<uint8_t> teed;
  uint64_t drained = 0;
};

// Parses a whole archive and checks the reader's invariants on the way: the tee has seen exactly
// data_offset bytes when an entry is returned, entries tile the stream, the data sits at
// data_offset, the tee reproduces the input byte for byte.
// read_piece == 0: skip data through Next() instead of reading it.
Result<Parsed> ParseAll(InputStream& in, size_t read_piece = 70000) {
  Parsed p;
  TarReader reader(in, [&](ByteSpan raw) {
    p.teed.insert(p.teed.end(), raw.begin(), raw.end());
    return Status::Ok();
  });
  uint64_t expect_header = 0;
  for (;;) {
    LC_ASSIGN_OR_RETURN(std::optional<Entry> e, reader.Next());
    if (!e) break;
    EXPECT_EQ(p.teed.size(), e->data_offset) << e->name;
    EXPECT_EQ(reader.offset(), e->data_offset) << e->name;
    EXPECT_EQ(e->header_offset, expect_header) << e->name;
    EXPECT_EQ(e->header_offset % 512, 0u);
    EXPECT_EQ(e->data_offset % 512, 0u);
    EXPECT_GE(e->data_offset, e->header_offset + 512);
    std::vector<uint8_t> data;
    if (read_piece > 0) {
      std::vector<uint8_t> buf(read_piece);
      for (;;) {
        LC_ASSIGN_OR_RETURN(size_t n, reader.ReadData(buf));
        if (n == 0) break;
        data.insert(data.end(), buf.begin(), buf.begin() + n);
      }
      EXPECT_EQ(data.size(), e->size) << e->name;
      EXPECT_EQ(p.teed.size(), e->data_offset + e->size) << e->name;
    }
    expect_header = e->data_offset + Pad512(e->size);
    p.entries.push_back(std::move(*e));
    p.data.push_back(std::move(data));
  }
  EXPECT_EQ(p.teed.size(), reader.offset());
  // Next() after the end stays at the end and consumes nothing.
  uint64_t at_end = reader.offset();
  auto again = reader.Next();
  EXPECT_TRUE(again.ok() && !again->has_value());
  EXPECT_EQ(reader.offset(), at_end);
  LC_ASSIGN_OR_RETURN(p.drained, reader.DrainToEnd());
  EXPECT_EQ(p.teed.size(), reader.offset());
  return p;
}

Result<Parsed> ParseBytes(ByteSpan tar, size_t source_piece = SIZE_MAX,
                          size_t read_piece = 70000) {
  TrickleInputStream in(tar, source_piece);
  auto p = ParseAll(in, read_piece);
  if (p.ok()) {
    EXPECT_EQ(p->teed.size(), tar.size());
    EXPECT_TRUE(std::equal(p->teed.begin(), p->teed.end(), tar.begin(), tar.end()))
        << "tee differs from the input";
    for (size_t i = 0; i < p->entries.size(); ++i) {
      const Entry& e = p->entries[i];
      if (read_piece > 0 && e.size > 0) {
        EXPECT_TRUE(std::equal(p->data[i].begin(), p->data[i].end(), tar.begin() + e.data_offset))
            << "data of " << e.name << " is not at data_offset";
      }
    }
  }
  return p;
}

// Parses until the first error and returns it (OK if the archive parses).
Status ParseError(ByteSpan tar) {
  TrickleInputStream in(tar, SIZE_MAX);
  TarReader reader(in);
  std::vector<uint8_t> buf(4096);
  for (;;) {
    auto e = reader.Next();
    if (!e.ok()) return e.status();
    if (!e->has_value()) return reader.DrainToEnd().status();
    for (;;) {
      auto n = reader.ReadData(buf);
      if (!n.ok()) return n.status();
      if (*n == 0) break;
    }
  }
}

Entry File(std::string name, uint64_t size, uint32_t mode = 0644) {
  Entry e;
  e.name = std::move(name);
  e.type = EntryType::kRegular;
  e.mode = mode;
  e.uid = 1000;
  e.gid = 1000;
  e.uname = "user";
  e.gname = "group";
  e.mtime_sec = 1700000000;
  e.size = size;
  return e;
}

Entry Other(std::string name, EntryType type, std::string link = "") {
  Entry e = File(std::move(name), 0, type == EntryType::kDirectory ? 0755 : 0644);
  e.type = type;
  e.link_name = std::move(link);
  return e;
}

// Builds an archive from (entry, data) pairs with one writer.
std::vector<uint8_t> Archive(Flavor flavor,
                             const std::vector<std::pair<Entry, std::vector<uint8_t>>>& items,
                             const WriteOptions& options = {}) {
  MemoryOutputStream out;
  TarWriter w(out, flavor);
  for (const auto& [e, d] : items) {
    Status s = w.AppendEntry(e, d, options);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_TRUE(w.Finish().ok());
  return out.Take();
}

// The fields the reader fills from the archive (offsets cleared).
Entry Content(Entry e) {
  e.header_offset = 0;
  e.data_offset = 0;
  return e;
}

// ---------------------------------------------------------------------------------------------
// Real GNU tar output

struct TreeFile {
  std::string rel;  // relative to the tree root's parent, as tar records it ("tree/...")
  std::vector<uint8_t> content;
};

class GnuTarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() / "tree";
    fs::create_directories(root_ / "sub");
    Write("empty", {});
    Write("small.txt", Bytes("hello from a small file\n"));
    Write("big.bin", RandomBytes((1 << 20) + 12345, 1));
    Write(".wh.deleted", {});
    Write("sub/.wh..wh..opq", {});
    // Names over 100 and over 255 bytes.
    std::string d100 = std::string(60, 'd');
    fs::create_directories(root_ / d100);
    long_name_ = d100 + "/" + std::string(70, 'f');
    Write(long_name_, Bytes("long name\n"));
    std::string deep = std::string(90, 'a') + "/" + std::string(90, 'b') + "/" + std::string(90, 'c');
    fs::create_directories(root_ / deep);
    very_long_name_ = deep + "/" + std::string(40, 'z') + ".txt";
    Write(very_long_name_, Bytes("very long name\n"));
    // Links.
    Symlink("small.txt", "link");
    long_target_ = std::string(80, 'x') + "/" + std::string(80, 'y');
    Symlink(long_target_, "longlink");
    ASSERT_EQ(link((root_ / "small.txt").c_str(), (root_ / "hard").c_str()), 0) << strerror(errno);
    // Special files.
    ASSERT_EQ(mkfifo((root_ / "fifo").c_str(), 0640), 0) << strerror(errno);
    ASSERT_EQ(mknod((root_ / "chr").c_str(), S_IFCHR | 0620, makedev(1, 3)), 0) << strerror(errno);
    ASSERT_EQ(mknod((root_ / "blk").c_str(), S_IFBLK | 0600, makedev(259, 70000)), 0)
        << strerror(errno);
    // Owners (chown before chmod and setcap: it clears setuid bits and capabilities).
    Write("bigids", Bytes("big ids\n"));
    ASSERT_EQ(lchown((root_ / "bigids").c_str(), 3000000, 4000000), 0) << strerror(errno);
    ASSERT_EQ(lchown((root_ / "small.txt").c_str(), 1234, 5678), 0);
    // Odd modes.
    Write("setuid", Bytes("#!/bin/true\n"));
    ASSERT_EQ(chmod((root_ / "setuid").c_str(), 04755), 0);
    Write("setgid", {});
    ASSERT_EQ(chmod((root_ / "setgid").c_str(), 02710), 0);
    Write("noperm", Bytes("x"));
    ASSERT_EQ(chmod((root_ / "noperm").c_str(), 0), 0);
    ASSERT_EQ(chmod((root_ / "sub").c_str(), 01777), 0);
    // xattrs: user.* with binary content, and a file capability.
    const char user_value[] = "bin\0ary\xff";
    ASSERT_EQ(lsetxattr((root_ / "small.txt").c_str(), "user.test", user_value,
                        sizeof(user_value) - 1, 0), 0) << strerror(errno);
    ASSERT_EQ(lsetxattr((root_ / "sub").c_str(), "user.dir", "d", 1, 0), 0);
    Write("cap", Bytes("capable\n"));
    if (RunShell("command -v setcap >/dev/null 2>&1") == 0) {
      ASSERT_EQ(RunShell("setcap cap_net_raw+ep '" + (root_ / "cap").string() + "'"), 0);
    } else {
      // VFS_CAP_REVISION_2: magic_etc, then permitted/inheritable (low, high words).
      const uint32_t cap[5] = {0x02000001, 1u << 13, 0, 0, 0};
      ASSERT_EQ(lsetxattr((root_ / "cap").c_str(), "security.capability", cap, sizeof(cap), 0), 0);
    }
    // Nanosecond mtimes last (everything above changes mtimes of directories).
    for (const auto& p : fs::recursive_directory_iterator(root_)) {
      ++count_;
      SetMtime(p.path(), 1600000000 + count_ * 7, 123456789 + count_);
    }
    SetMtime(root_, 1500000000, 999999999);
  }

  void Write(const std::string& rel, const std::vector<uint8_t>& content) {
    ASSERT_TRUE(WriteFileAtomically(root_ / rel, content).ok());
  }
  void Symlink(const std::string& target, const std::string& rel) {
    ASSERT_EQ(symlink(target.c_str(), (root_ / rel).c_str()), 0) << strerror(errno);
  }
  void SetMtime(const fs::path& p, int64_t sec, long nsec) {
    struct timespec ts[2];
    ts[0].tv_sec = sec;
    ts[0].tv_nsec = nsec;
    ts[1] = ts[0];
    ASSERT_EQ(utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << p;
  }

  std::vector<uint8_t> MakeTar(const std::string& args, const std::string& out_name) {
    std::string out = (dir_.path() / out_name).string();
    EXPECT_EQ(RunShell("tar " + args + " -cf '" + out + "' -C '" + dir_.path().string() +
                       "' tree"),
              0);
    auto bytes = ReadFileBytes(out);
    EXPECT_TRUE(bytes.ok());
    return bytes.ok() ? *bytes : std::vector<uint8_t>();
  }

  // Checks every entry against lstat/readlink/getxattr of the tree.
  void CheckAgainstTree(const Parsed& p, bool pax) {
    std::set<std::string> seen;
    std::map<ino_t, std::string> first_name_of_inode;
    for (size_t i = 0; i < p.entries.size(); ++i) {
      const Entry& e = p.entries[i];
      SCOPED_TRACE(e.name);
      std::string name = e.name;
      if (!name.empty() && name.back() == '/') name.pop_back();
      ASSERT_TRUE(name == "tree" || name.starts_with("tree/"));
      fs::path path = dir_.path() / name;
      struct stat st;
      ASSERT_EQ(lstat(path.c_str(), &st), 0) << "entry not in the tree";
      seen.insert(name);
      EXPECT_EQ(e.mode, st.st_mode & 07777);
      EXPECT_EQ(e.uid, st.st_uid);
      EXPECT_EQ(e.gid, st.st_gid);
      struct passwd* pw = getpwuid(st.st_uid);
      EXPECT_EQ(e.uname, pw ? pw->pw_name : "");
      struct group* gr = getgrgid(st.st_gid);
      EXPECT_EQ(e.gname, gr ? gr->gr_name : "");
      EXPECT_EQ(e.mtime_sec, st.st_mtim.tv_sec);
      EXPECT_EQ(e.mtime_nsec, pax ? static_cast<uint32_t>(st.st_mtim.tv_nsec) : 0u);
      bool hardlink_seen = S_ISREG(st.st_mode) && first_name_of_inode.count(st.st_ino) > 0;
      if (hardlink_seen) {
        EXPECT_EQ(e.type, EntryType::kHardlink);
        EXPECT_EQ(e.link_name, first_name_of_inode[st.st_ino]);
        EXPECT_EQ(e.size, 0u);
      } else if (S_ISREG(st.st_mode)) {
        first_name_of_inode[st.st_ino] = e.name;
        EXPECT_EQ(e.type, EntryType::kRegular);
        EXPECT_EQ(e.size, static_cast<uint64_t>(st.st_size));
        auto content = ReadFileBytes(path);
        ASSERT_TRUE(content.ok());
        EXPECT_TRUE(p.data[i] == *content) << "data differs";
      } else if (S_ISDIR(st.st_mode)) {
        EXPECT_EQ(e.type, EntryType::kDirectory);
        EXPECT_EQ(e.name.back(), '/');
      } else if (S_ISLNK(st.st_mode)) {
        EXPECT_EQ(e.type, EntryType::kSymlink);
        EXPECT_EQ(e.link_name, fs::read_symlink(path).string());
      } else if (S_ISFIFO(st.st_mode)) {
        EXPECT_EQ(e.type, EntryType::kFifo);
      } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        EXPECT_EQ(e.type, S_ISCHR(st.st_mode) ? EntryType::kCharDevice : EntryType::kBlockDevice);
        EXPECT_EQ(e.dev_major, major(st.st_rdev));
        EXPECT_EQ(e.dev_minor, minor(st.st_rdev));
      }
      if (e.type != EntryType::kRegular) {
        EXPECT_EQ(e.size, 0u);
      }
      // xattrs (GNU format has none).
      std::map<std::string, std::string> want;
      if (pax && e.type != EntryType::kHardlink) {  // a hard link's xattrs are its target's
        std::vector<char> names(65536);
        ssize_t len = llistxattr(path.c_str(), names.data(), names.size());
        ASSERT_GE(len, 0);
        for (ssize_t off = 0; off < len; off += static_cast<ssize_t>(strlen(&names[off])) + 1) {
          std::string n = &names[off];
          std::vector<char> value(65536);
          ssize_t vlen = lgetxattr(path.c_str(), n.c_str(), value.data(), value.size());
          ASSERT_GE(vlen, 0);
          want[n] = std::string(value.data(), static_cast<size_t>(vlen));
        }
      }
      EXPECT_EQ(e.xattrs, want);
    }
    // Every file of the tree is in the archive.
    size_t count = 1;  // the root
    for (auto it = fs::recursive_directory_iterator(root_); it != fs::recursive_directory_iterator();
         ++it) {
      ++count;
      std::string rel = "tree/" + fs::relative(it->path(), root_).string();
      EXPECT_TRUE(seen.count(rel)) << rel << " missing from the archive";
    }
    EXPECT_EQ(p.entries.size(), count);
  }

  // header_offset points at the first header block (an 'x' or 'L'/'K' one when present), and
  // the block just before data_offset is the entry's own header.
  void CheckOffsets(const std::vector<uint8_t>& tar, const Parsed& p) {
    for (const Entry& e : p.entries) {
      SCOPED_TRACE(e.name);
      char first_type = static_cast<char>(tar[e.header_offset + 156]);
      char own_type = static_cast<char>(tar[e.data_offset - 512 + 156]);
      EXPECT_TRUE(own_type != 'x' && own_type != 'L' && own_type != 'K');
      if (e.data_offset - e.header_offset > 512) {
        EXPECT_TRUE(first_type == 'x' || first_type == 'L' || first_type == 'K') << first_type;
      }
      // The header's name field is the end of the name (or its start, when truncated).
      std::string field(reinterpret_cast<const char*>(&tar[e.data_offset - 512]),
                        strnlen(reinterpret_cast<const char*>(&tar[e.data_offset - 512]), 100));
      EXPECT_TRUE(e.name.ends_with(field) || e.name.starts_with(field)) << field;
    }
  }

  TempDir dir_;
  fs::path root_;
  std::string long_name_, very_long_name_, long_target_;
  int count_ = 0;
};

TEST_F(GnuTarTest, PaxFormatEveryField) {
  auto tar = MakeTar("--format=pax --xattrs --xattrs-include='*'", "pax.tar");
  ASSERT_FALSE(tar.empty());
  auto p = ParseBytes(tar);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  CheckAgainstTree(*p, /*pax=*/true);
  CheckOffsets(tar, *p);
  EXPECT_GT(p->drained, 0u);  // GNU tar pads to a 10 KiB record
  // The features under test are really in there.
  std::set<std::string> names;
  for (const auto& e : p->entries) names.insert(e.name);
  EXPECT_TRUE(names.count("tree/" + long_name_));
  EXPECT_TRUE(names.count("tree/" + very_long_name_));
  EXPECT_TRUE(names.count("tree/.wh.deleted"));
  EXPECT_TRUE(names.count("tree/sub/.wh..wh..opq"));
  bool saw_cap = false;
  for (const auto& e : p->entries) {
    if (e.name == "tree/cap") saw_cap = e.xattrs.count("security.capability") == 1;
    if (e.name == "tree/longlink") {
      EXPECT_EQ(e.link_name, long_target_);
    }
  }
  EXPECT_TRUE(saw_cap);
}

TEST_F(GnuTarTest, GnuFormatEveryField) {
  auto tar = MakeTar("--format=gnu", "gnu.tar");
  ASSERT_FALSE(tar.empty());
  // GNU format stores uid 3000000 in base-256: make sure that path is exercised.
  auto p = ParseBytes(tar);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  CheckAgainstTree(*p, /*pax=*/false);
  CheckOffsets(tar, *p);
  bool saw_base256 = false;
  for (const auto& e : p->entries) {
    if (e.name == "tree/bigids") saw_base256 = (tar[e.data_offset - 512 + 108] & 0x80) != 0;
  }
  EXPECT_TRUE(saw_base256);
}

TEST_F(GnuTarTest, OddPieceSizesAndSkippedData) {
  auto tar = MakeTar("--format=pax --xattrs --xattrs-include='*'", "pax.tar");
  auto reference = ParseBytes(tar);
  ASSERT_TRUE(reference.ok());
  for (size_t source_piece : {size_t{1}, size_t{511}, size_t{513}, size_t{100000}}) {
    for (size_t read_piece : {size_t{0}, size_t{1}, size_t{4097}, size_t{1} << 20}) {
      if (source_piece == 1 && read_piece == 1) continue;  // slow, and covered by the others
      SCOPED_TRACE(testing::Message() << source_piece << "/" << read_piece);
      auto p = ParseBytes(tar, source_piece, read_piece);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      ASSERT_EQ(p->entries, reference->entries);
      if (read_piece > 0) {
        EXPECT_EQ(p->data, reference->data);
      }
    }
  }
}

TEST_F(GnuTarTest, CompressedInputs) {
  auto tar = MakeTar("--format=pax --xattrs --xattrs-include='*'", "pax.tar");
  auto reference = ParseBytes(tar);
  ASSERT_TRUE(reference.ok());
  std::string d = dir_.path().string();
  ASSERT_EQ(RunShell("gzip -c '" + d + "/pax.tar' > '" + d + "/pax.tar.gz'"), 0);
  ASSERT_EQ(RunShell("zstd -q -c '" + d + "/pax.tar' > '" + d + "/pax.tar.zst'"), 0);
  for (const char* name : {"pax.tar.gz", "pax.tar.zst"}) {
    SCOPED_TRACE(name);
    auto compressed = ReadFileBytes(dir_.path() / name);
    ASSERT_TRUE(compressed.ok());
    MemoryInputStream raw(*compressed);
    auto stream = compress::NewDecompressingStream(raw);
    ASSERT_TRUE(stream.ok());
    auto p = ParseAll(**stream);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_EQ(p->entries, reference->entries);
    EXPECT_EQ(p->data, reference->data);
    EXPECT_TRUE(p->teed == tar) << "tee must give back the uncompressed tar";
  }
}

TEST_F(GnuTarTest, EveryHeaderByteFlipIsRejected) {
  auto tar = MakeTar("--format=gnu", "gnu.tar");
  auto p = ParseBytes(tar);
  ASSERT_TRUE(p.ok());
  // Each header block is covered by its checksum: flipping any bit of any header byte (the
  // checksum field included) must fail the parse, with the block's offset in the message. (The
  // body of a GNU 'L' long-name block is data, not covered by a checksum.)
  int tried = 0;
  for (const Entry& e : p->entries) {
    for (uint64_t block = e.header_offset; block < e.data_offset;) {
      for (size_t i = 0; i < 512; i += 3) {
        auto bad = tar;
        bad[block + i] ^= 0x10;
        Status s = ParseError(bad);
        ++tried;
        ASSERT_FALSE(s.ok()) << "flip at " << block + i << " accepted";
        ASSERT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
        ASSERT_THAT(s.message(), HasSubstr("offset " + std::to_string(block))) << s.ToString();
      }
      char type = static_cast<char>(tar[block + 156]);
      uint64_t body = 0;
      if (type == 'L' || type == 'K') {
        body = std::stoull(std::string(reinterpret_cast<const char*>(&tar[block + 124]), 11),
                           nullptr, 8);
      }
      block += 512 + Pad512(body);
    }
  }
  EXPECT_GT(tried, 1000);
}

// ---------------------------------------------------------------------------------------------
// TarWriter output: every feature, both flavours

std::vector<std::pair<Entry, std::vector<uint8_t>>> FeatureEntries(bool pax) {
  std::vector<std::pair<Entry, std::vector<uint8_t>>> items;
  items.push_back({Other("dir/", EntryType::kDirectory), {}});
  items.push_back({File("dir/empty", 0), {}});
  items.push_back({File("dir/small", 5), Bytes("hello")});
  items.push_back({File("dir/block", 512), RandomBytes(512, 2)});
  items.push_back({File("dir/big", 200000, 04755), RandomBytes(200000, 3)});
  std::string name150 = "dir/" + std::string(50, 'p') + "/" + std::string(95, 'n');
  items.push_back({File(name150, 3), Bytes("abc")});
  std::string name300 = "dir/" + std::string(296, 'q');
  items.push_back({File(name300, 1), Bytes("z")});
  items.push_back({Other("dir/sym", EntryType::kSymlink, std::string(150, 't')), {}});
  items.push_back({Other("dir/hard", EntryType::kHardlink, "dir/small"), {}});
  items.push_back({Other("dir/fifo", EntryType::kFifo), {}});
  Entry chr = Other("dir/chr", EntryType::kCharDevice);
  chr.dev_major = 1;
  chr.dev_minor = 3;
  items.push_back({chr, {}});
  Entry blk = Other("dir/blk", EntryType::kBlockDevice);
  blk.dev_major = 259;
  blk.dev_minor = pax ? 70000000 : 2097151;  // PAX: SCHILY.devminor
  items.push_back({blk, {}});
  Entry ids = File("dir/ids", 0, 01777);
  ids.uid = 3000000;
  ids.gid = 4000000000;  // GNU tar refuses gids over 32 bits
  items.push_back({ids, {}});
  Entry old = File("dir/old", 0);
  old.mtime_sec = -100;  // before 1970
  items.push_back({old, {}});
  if (pax) {
    Entry ns = File("dir/ns", 0);
    ns.mtime_nsec = 123456789;
    items.push_back({ns, {}});
    Entry negns = File("dir/negns", 0);
    negns.mtime_sec = -2;
    negns.mtime_nsec = 750000000;  // -1.25 s
    items.push_back({negns, {}});
    Entry x = File("dir/xattrs", 0);
    x.xattrs["user.a"] = "1";
    x.xattrs["user.bin"] = std::string("\0\xff\n=%", 5);
    x.xattrs["security.capability"] = std::string("\x01\x00\x00\x02\x00\x20\x00\x00", 8);
    items.push_back({x, {}});
    Entry longowner = File("dir/owner", 0);
    longowner.uname = std::string(40, 'u');
    longowner.gname = std::string(40, 'g');
    items.push_back({longowner, {}});
  }
  return items;
}

TEST(TarWriterRoundTrip, PaxAndGnu) {
  for (bool pax : {true, false}) {
    SCOPED_TRACE(pax ? "pax" : "gnu");
    auto items = FeatureEntries(pax);
    auto tar = Archive(pax ? Flavor::kPax : Flavor::kGnu, items);
    auto p = ParseBytes(tar);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ASSERT_EQ(p->entries.size(), items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(Content(p->entries[i]), items[i].first) << items[i].first.name;
      EXPECT_EQ(p->data[i], items[i].second);
    }
    EXPECT_EQ(tar.size() % 10240, 0u);
  }
}

TEST(TarWriterRoundTrip, OptionsForcePaxBase256AndLibarchiveXattrs) {
  auto items = FeatureEntries(true);
  std::vector<WriteOptions> variants(4);
  variants[0].force_pax_path = true;
  variants[1].base256_numbers = true;
  variants[2].pax_size = true;
  variants[2].no_prefix = true;
  variants[3].libarchive_xattrs = true;
  for (size_t v = 0; v < variants.size(); ++v) {
    SCOPED_TRACE(v);
    auto tar = Archive(Flavor::kPax, items, variants[v]);
    auto p = ParseBytes(tar);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ASSERT_EQ(p->entries.size(), items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(Content(p->entries[i]), items[i].first) << items[i].first.name;
    }
  }
}

TEST(TarWriterRoundTrip, GnuTarReadsOurArchives) {
  TempDir dir;
  for (bool pax : {true, false}) {
    auto items = FeatureEntries(pax);
    auto tar = Archive(pax ? Flavor::kPax : Flavor::kGnu, items);
    fs::path path = dir.path() / (pax ? "ours-pax.tar" : "ours-gnu.tar");
    ASSERT_TRUE(WriteFileAtomically(path, tar).ok());
    fs::path list = dir.path() / "list";
    // (GNU tar warns about SCHILY.devminor, which it does not know, on stderr.)
    int rc = RunShell("tar -tf '" + path.string() + "' > '" + list.string() + "'");
    std::ifstream in(list);
    std::vector<std::string> names;
    std::string all;
    for (std::string line; std::getline(in, line);) {
      names.push_back(line);
      all += line + "\n";
    }
    ASSERT_EQ(rc, 0) << all;
    ASSERT_EQ(names.size(), items.size());
    for (size_t i = 0; i < items.size(); ++i) EXPECT_EQ(names[i], items[i].first.name);
  }
}

TEST(TarReader, PaxExtendedHeaderSyntax) {
  // Known bytes: the record length counts itself.
  EXPECT_EQ(PaxRecord("path", "a"), "9 path=a\n");
  EXPECT_EQ(PaxRecord("k", std::string(93, 'v')), "99 k=" + std::string(93, 'v') + "\n");
  // 98 bytes plus two digits would be 100, which needs three digits: 101.
  EXPECT_EQ(PaxRecord("k", std::string(94, 'v')), "101 k=" + std::string(94, 'v') + "\n");
}

TEST(TarReader, LibarchiveXattrsPaddedAndUnpadded) {
  for (const std::string& value : {std::string("YWJj"), std::string("YWI"), std::string("YWI="),
                                   std::string("YQ"), std::string("YQ=="), std::string("")}) {
    SCOPED_TRACE(value);
    WriteOptions o;
    o.extra_pax = {{"LIBARCHIVE.xattr.user.%41%3db", value}};
    auto tar = Archive(Flavor::kPax, {{File("f", 0), {}}}, o);
    auto p = ParseBytes(tar);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    std::string want = value.starts_with("YWJj") ? "abc" : value.starts_with("YWI") ? "ab"
                       : value.empty() ? "" : "a";
    EXPECT_EQ(p->entries[0].xattrs, (std::map<std::string, std::string>{{"user.A=b", want}}));
  }
}

TEST(TarReader, GlobalHeadersAreIgnoredAsContainerdDoes) {
  MemoryOutputStream out;
  TarWriter w(out);
  ASSERT_TRUE(w.AppendEntry(File("before", 0)).ok());
  ASSERT_TRUE(w.AppendGlobalHeader({{"uid", "77"}, {"mtime", "5.5"}, {"comment", "git sha"},
                                    {"path", "everything"}, {"SCHILY.xattr.user.g", "global"}})
                  .ok());
  ASSERT_TRUE(w.AppendEntry(File("after1", 0)).ok());
  WriteOptions o;
  o.extra_pax = {{"uid", "88"}};
  ASSERT_TRUE(w.AppendEntry(File("after2", 0), {}, o).ok());
  ASSERT_TRUE(w.Finish().ok());
  auto p = ParseBytes(out.bytes());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->entries.size(), 3u);
  EXPECT_EQ(p->entries[1].name, "after1");
  EXPECT_EQ(p->entries[1].uid, 1000u);
  EXPECT_NE(p->entries[1].mtime_sec, 5);
  EXPECT_TRUE(p->entries[1].xattrs.empty());
  EXPECT_EQ(p->entries[2].uid, 88u);
  // The global header belongs to the span of the entry after it.
  EXPECT_EQ(p->entries[1].header_offset, 512u);
  EXPECT_EQ(p->entries[1].data_offset - p->entries[1].header_offset, 3 * 512u);
}

TEST(TarReader, MalformedGlobalHeaderIsCorruption) {
  MemoryOutputStream out;
  TarWriter w(out);
  ASSERT_TRUE(w.AppendGlobalHeader({{"comment", "x"}}).ok());
  ASSERT_TRUE(w.AppendEntry(File("a", 0)).ok());
  ASSERT_TRUE(w.Finish().ok());
  auto bytes = out.bytes();
  // Corrupt the global header body ("13 comment=x\n"): its record length overruns the body.
  ASSERT_EQ(bytes[512], '1');
  bytes[512] = '9';
  Status s = ParseError(bytes);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("global"));
}

TEST(TarReader, PaxOverridesHeaderAndGnuLongNameOverridesPax) {
  WriteOptions o;
  o.extra_pax = {{"path", "from-pax"}, {"size", "3"}, {"gid", "9"}, {"mtime", "-1.25"},
                 {"atime", "1.5"}, {"ctime", "2"}, {"hdrcharset", "BINARY"}, {"comment", "hi"},
                 {"SCHILY.dev", "12"}, {"LIBARCHIVE.creationtime", "3"}};
  Entry e = File("header-name", 3);
  auto tar = Archive(Flavor::kPax, {{e, Bytes("abc")}}, o);
  auto p = ParseBytes(tar);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->entries[0].name, "from-pax");
  EXPECT_EQ(p->entries[0].gid, 9u);
  EXPECT_EQ(p->entries[0].mtime_sec, -2);
  EXPECT_EQ(p->entries[0].mtime_nsec, 750000000u);

  // GNU flavour: an 'L' block plus an 'x' with a different path: the 'L' name wins.
  WriteOptions g;
  g.extra_pax = {{"path", "from-pax"}};
  auto gtar = Archive(Flavor::kGnu, {{File(std::string(120, 'L'), 0), {}}}, g);
  auto gp = ParseBytes(gtar);
  ASSERT_TRUE(gp.ok()) << gp.status().ToString();
  EXPECT_EQ(gp->entries[0].name, std::string(120, 'L'));
}

TEST(TarReader, LegacyTypeflagsAndV7Headers) {
  // '\0' with a trailing slash is a directory, without one a regular file; '7' is regular.
  WriteOptions nul;
  nul.typeflag = '\0';
  WriteOptions contiguous;
  contiguous.typeflag = '7';
  MemoryOutputStream out;
  TarWriter w(out);
  ASSERT_TRUE(w.AppendEntry(File("olddir/", 0), {}, nul).ok());
  ASSERT_TRUE(w.AppendEntry(File("oldfile", 2), Bytes("hi"), nul).ok());
  ASSERT_TRUE(w.AppendEntry(File("contig", 1), Bytes("c"), contiguous).ok());
  ASSERT_TRUE(w.Finish(0).ok());
  auto tar = out.Take();
  // Make the last entry a V7 header: no magic, so uname/gname are not read.
  size_t hdr = 3 * 512;  // after olddir/ (1 block) and oldfile (header + data)
  ASSERT_EQ(tar[hdr + 156], '7');
  std::memset(&tar[hdr + 257], 0, 8);
  SetHeaderChecksum(MutableByteSpan(&tar[hdr], 512));
  auto p = ParseBytes(tar);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->entries.size(), 3u);
  EXPECT_EQ(p->entries[0].type, EntryType::kDirectory);
  EXPECT_EQ(p->entries[1].type, EntryType::kRegular);
  EXPECT_EQ(p->data[1], Bytes("hi"));
  EXPECT_EQ(p->entries[2].type, EntryType::kRegular);
  EXPECT_EQ(p->entries[2].uname, "");
  EXPECT_EQ(p->data[2], Bytes("c"));
  EXPECT_EQ(p->drained, 0u);
}

TEST(TarReader, SignedChecksumAccepted) {
  // Old tars summed the header as signed chars; a name with bytes >= 0x80 tells the two apart.
  auto tar = Archive(Flavor::kPax, {{File("caf\xc3\xa9\xff", 0), {}}});
  int64_t signed_sum = 0;
  for (size_t i = 0; i < 512; ++i) {
    signed_sum += (i >= 148 && i < 156) ? ' ' : static_cast<int8_t>(tar[i]);
  }
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%06o", static_cast<unsigned>(signed_sum));
  std::memcpy(&tar[148], buf, 6);
  auto p = ParseBytes(tar);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->entries[0].name, "caf\xc3\xa9\xff");
  tar[148] ^= 1;  // now neither sum matches
  Status s = ParseError(tar);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("checksum mismatch"));
}

TEST(TarReader, EndOfArchiveVariants) {
  auto base = Archive(Flavor::kPax, {{File("a", 1), Bytes("x")}});
  std::vector<uint8_t> entry_only(base.begin(), base.begin() + 1024);
  // Two zero blocks: fine, nothing drained.
  auto two = entry_only;
  two.resize(2048, 0);
  auto p2 = ParseBytes(two);
  ASSERT_TRUE(p2.ok());
  EXPECT_EQ(p2->drained, 0u);
  // One zero block then EOF: accepted like GNU tar.
  auto one = entry_only;
  one.resize(1536, 0);
  EXPECT_TRUE(ParseBytes(one).ok());
  // No marker at all (umoci's layers): EOF at a header boundary ends the archive.
  auto none = ParseBytes(entry_only);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->entries.size(), 1u);
  EXPECT_EQ(none->drained, 0u);
  // EOF in the middle of a header block is still Corruption.
  auto torn = entry_only;
  torn.resize(entry_only.size() + 100, 'x');
  EXPECT_EQ(ParseError(torn).code(), StatusCode::kCorruption);
  // A lone zero block followed by another header.
  auto lone = entry_only;
  lone.resize(1536, 0);
  lone.insert(lone.end(), base.begin(), base.begin() + 512);
  Status l = ParseError(lone);
  EXPECT_EQ(l.code(), StatusCode::kCorruption);
  EXPECT_THAT(l.message(), HasSubstr("lone zero block"));
  // Trailing garbage after the marker is drained (and teed), not parsed.
  auto trailing = two;
  trailing.insert(trailing.end(), {'j', 'u', 'n', 'k'});
  auto pt = ParseBytes(trailing);
  ASSERT_TRUE(pt.ok());
  EXPECT_EQ(pt->drained, 4u);
  // An empty stream is an empty archive, as for Go's archive/tar.
  auto empty = ParseBytes({});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->entries.empty());
}

TEST(TarReader, EveryTruncationIsRejected) {
  auto items = FeatureEntries(true);
  items.resize(8);
  auto tar = Archive(Flavor::kPax, items);
  auto p = ParseBytes(tar);
  ASSERT_TRUE(p.ok());
  const Entry& last = p->entries.back();
  const uint64_t marker = last.data_offset + Pad512(last.size);
  // A cut exactly where an entry's first header block starts (or where the marker starts) is a
  // shorter archive without a marker, which Go's archive/tar accepts too: it holds the entries
  // before the cut. (For layers, the diff_id check catches such a cut.) Every other cut fails.
  std::map<uint64_t, size_t> boundaries;  // offset -> entries before it
  for (size_t i = 0; i < p->entries.size(); ++i) boundaries[p->entries[i].header_offset] = i;
  boundaries[marker] = p->entries.size();
  for (uint64_t len = 0; len < marker + 512; len += (len < 4096 ? 1 : 97)) {
    auto cut = ParseBytes(ByteSpan(tar).first(len));
    if (auto b = boundaries.find(len); b != boundaries.end()) {
      ASSERT_TRUE(cut.ok()) << "length " << len << ": " << cut.status().ToString();
      EXPECT_EQ(cut->entries.size(), b->second) << "length " << len;
      continue;
    }
    ASSERT_FALSE(cut.ok()) << "length " << len;
    ASSERT_EQ(cut.status().code(), StatusCode::kCorruption)
        << "length " << len << ": " << cut.status().ToString();
  }
  for (uint64_t len = marker + 512; len <= tar.size(); len += 512) {
    EXPECT_TRUE(ParseError(ByteSpan(tar).first(len)).ok()) << len;
  }
}

TEST(TarReader, TruncatedDataNamesTheEntry) {
  auto tar = Archive(Flavor::kPax, {{File("dir/file", 1000), RandomBytes(1000, 5)}});
  Status s = ParseError(ByteSpan(tar).first(512 + 700));
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("'dir/file'"));
  EXPECT_THAT(s.message(), HasSubstr("truncated data"));
  EXPECT_THAT(s.message(), HasSubstr("300 bytes missing"));
  // Skipping through Next() reports it too.
  TrickleInputStream in(ByteSpan(tar).first(512 + 700), SIZE_MAX);
  TarReader r(in);
  ASSERT_TRUE(r.Next().ok());
  auto n = r.Next();
  ASSERT_FALSE(n.ok());
  EXPECT_THAT(n.status().message(), HasSubstr("truncated data"));
  // Truncated header.
  Status h = ParseError(ByteSpan(tar).first(300));
  EXPECT_EQ(h.code(), StatusCode::kCorruption);
  EXPECT_THAT(h.message(), HasSubstr("truncated header block"));
}

// --- hostile headers --------------------------------------------------------------------------

Status ParseWith(const Entry& e, std::vector<uint8_t> data, const WriteOptions& o,
                 Flavor flavor = Flavor::kPax) {
  return ParseError(Archive(flavor, {{e, std::move(data)}}, o));
}

TEST(TarReaderHostile, BadPaxLengths) {
  const std::vector<std::string> bodies = {
      "99 path=x\n",        // length beyond the data
      "abc path=x\n",       // not a number
      "10 path=xy\n",       // record does not end in a newline at its length
      "9 pathx\n",          // no '='
      "7 =x\n",             // empty keyword
      " 11 path=x\n",       // leading space
      "0 \n",               // zero length
      "3 \n",               // too short
      "-11 path=a\n",       // sign
      "99999999999999999999999 path=x\n",  // overflow
  };
  for (const std::string& body : bodies) {
    SCOPED_TRACE(body);
    WriteOptions o;
    o.raw_pax_body = body;
    Status s = ParseWith(File("f", 0), {}, o);
    ASSERT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_THAT(s.message(), HasSubstr("PAX"));
    EXPECT_THAT(s.message(), HasSubstr("offset 0"));
  }
}

TEST(TarReaderHostile, BadPaxValues) {
  const std::vector<std::pair<std::string, std::string>> records = {
      {"size", "12a"}, {"size", ""}, {"size", "-1"}, {"uid", "1.5"}, {"gid", "99999999999999999999999"},
      {"mtime", "abc"}, {"mtime", "1.2.3"}, {"mtime", ""}, {"SCHILY.devmajor", "4294967296"},
      {"LIBARCHIVE.xattr.user.a", "!!!"}, {"LIBARCHIVE.xattr.user.a", "YQ="},
      {"LIBARCHIVE.xattr.user.%4", "YQ"}, {"LIBARCHIVE.xattr.user.%zz", "YQ"},
      {"SCHILY.xattr.", "v"}, {"path", std::string("a\0b", 3)},
      {"linkpath", std::string("a\0", 2)}, {"uname", std::string("\0", 1)},
  };
  for (const auto& [k, v] : records) {
    SCOPED_TRACE(k + "=" + v);
    WriteOptions o;
    o.extra_pax = {{k, v}};
    Status s = ParseWith(File("f", 0), {}, o);
    ASSERT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("PAX record"));
  }
  // NUL in the PAX path, by name.
  WriteOptions o;
  o.extra_pax = {{"path", std::string("evil\0name", 9)}};
  Status s = ParseWith(File("f", 0), {}, o);
  EXPECT_THAT(s.message(), HasSubstr("NUL"));
}

TEST(TarReaderHostile, ConflictingXattrRecords) {
  WriteOptions o;
  o.extra_pax = {{"SCHILY.xattr.user.a", "one"}, {"LIBARCHIVE.xattr.user.a", "dHdv"}};
  Status s = ParseWith(File("f", 0), {}, o);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("conflicts"));
  // Agreeing records (what bsdtar writes) are fine.
  o.extra_pax = {{"SCHILY.xattr.user.a", "one"}, {"LIBARCHIVE.xattr.user.a", "b25l"}};
  EXPECT_TRUE(ParseWith(File("f", 0), {}, o).ok());
}

TEST(TarReaderHostile, UnsupportedTypesAreNamed) {
  const std::vector<std::pair<char, std::string>> types = {
      {'S', "GNU sparse file"}, {'M', "GNU multi-volume continuation"}, {'V', "GNU volume label"},
      {'D', "GNU dumpdir"},     {'N', "GNU old long name"},           {'Z', "unknown type"},
      {'A', "unknown type"},    {'\x01', "unknown type"},
  };
  for (const auto& [t, what] : types) {
    SCOPED_TRACE(what);
    WriteOptions o;
    o.typeflag = t;
    Status s = ParseWith(File("a/b", 0), {}, o);
    ASSERT_EQ(s.code(), StatusCode::kUnsupported) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("tar entry 'a/b' at offset 0: unsupported type"));
    EXPECT_THAT(s.message(), HasSubstr("(" + what + ")"));
  }
  WriteOptions o;
  o.typeflag = 'S';
  EXPECT_EQ(ParseWith(File("a/b", 0), {}, o).message(),
            "tar entry 'a/b' at offset 0: unsupported type 'S' (GNU sparse file)");
}

TEST(TarReaderHostile, GnuSparsePaxKeysAreUnsupported) {
  for (const char* key : {"GNU.sparse.major", "GNU.sparse.size", "GNU.sparse.map",
                          "GNU.sparse.name"}) {
    WriteOptions o;
    o.extra_pax = {{key, "1"}};
    Status s = ParseWith(File("sparse", 0), {}, o);
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << key;
    EXPECT_THAT(s.message(), HasSubstr("GNU sparse"));
    EXPECT_THAT(s.message(), HasSubstr("'sparse'"));
  }
}

TEST(TarReaderHostile, NulInsideGnuLongName) {
  Entry e = File(std::string(150, 'n'), 0);
  auto tar = Archive(Flavor::kGnu, {{e, {}}});
  ASSERT_EQ(tar[156], 'L');
  tar[512 + 10] = 0;  // the long name's body starts at 512
  SetHeaderChecksum(MutableByteSpan(tar.data(), 512));
  Status s = ParseError(tar);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("contains a NUL byte"));
}

TEST(TarReaderHostile, NegativeAndAbsurdSizes) {
  // Negative base-256 size.
  auto tar = Archive(Flavor::kGnu, {{File("neg", 0), {}}});
  std::memset(&tar[124], 0xff, 12);
  SetHeaderChecksum(MutableByteSpan(tar.data(), 512));
  Status s = ParseError(tar);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("'neg'"));
  EXPECT_THAT(s.message(), HasSubstr("negative size"));
  // Base-256 size of 2^62.
  std::memset(&tar[124], 0, 12);
  tar[124] = 0x80;
  tar[128] = 0x40;
  SetHeaderChecksum(MutableByteSpan(tar.data(), 512));
  s = ParseError(tar);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("larger than the limit"));
  // Base-256 overflowing int64.
  std::memset(&tar[124], 0xff, 12);
  tar[124] = 0x80;
  SetHeaderChecksum(MutableByteSpan(tar.data(), 512));
  s = ParseError(tar);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("malformed size field"));
  // PAX size of 2^50.
  WriteOptions o;
  o.extra_pax = {{"size", std::to_string(uint64_t{1} << 50)}};
  s = ParseWith(File("huge", 0), {}, o);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("out of range"));
}

TEST(TarReaderHostile, MalformedNumericFields) {
  auto tar = Archive(Flavor::kPax, {{File("m", 0), {}}});
  std::memcpy(&tar[100], "0064x4 ", 8);
  SetHeaderChecksum(MutableByteSpan(tar.data(), 512));
  Status s = ParseError(tar);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("malformed mode field"));
  // Octal with space/NUL padding on both sides is fine (old writers).
  std::memcpy(&tar[100], " 644 \0\0", 8);
  SetHeaderChecksum(MutableByteSpan(tar.data(), 512));
  auto p = ParseBytes(tar);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->entries[0].mode, 0644u);
}

TEST(TarReaderHostile, ExtendedHeaderOverOneMiB) {
  WriteOptions o;
  o.extra_pax = {{"comment", std::string(1 << 20, 'c')}};
  Status s = ParseWith(File("f", 0), {}, o);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("larger than the limit"));
  // Just under is fine.
  o.extra_pax = {{"comment", std::string((1 << 20) - 100, 'c')}};
  EXPECT_TRUE(ParseWith(File("f", 0), {}, o).ok());
  // A GNU long name over 1 MiB.
  Status g = ParseWith(File(std::string((1 << 20) + 1, 'n'), 0), {}, {}, Flavor::kGnu);
  EXPECT_EQ(g.code(), StatusCode::kCorruption);
  EXPECT_THAT(g.message(), HasSubstr("'L' extended header"));
}

TEST(TarReaderHostile, ManyExtendedHeadersForOneEntry) {
  MemoryOutputStream out;
  TarWriter w(out);
  std::string comment(900 * 1024, 'c');
  for (int i = 0; i < 10; ++i) {
    // An 'x' block by hand (the writer emits one per entry).
    std::vector<uint8_t> block(512, 0);
    std::memcpy(block.data(), "PaxHeaders/f", 12);
    std::string size = PaxRecord("comment" + std::to_string(i), comment);
    char field[13];
    std::snprintf(field, sizeof(field), "%011o", static_cast<unsigned>(size.size()));
    std::memcpy(&block[124], field, 12);
    std::memcpy(&block[100], "0000644", 8);
    block[156] = 'x';
    std::memcpy(&block[257], "ustar\0" "00", 8);
    SetHeaderChecksum(block);
    ASSERT_TRUE(w.AppendRaw(block).ok());
    ASSERT_TRUE(w.AppendRaw(AsBytes(size)).ok());
    std::vector<uint8_t> pad((512 - size.size() % 512) % 512, 0);
    ASSERT_TRUE(w.AppendRaw(pad).ok());
  }
  ASSERT_TRUE(w.AppendEntry(File("f", 0)).ok());
  ASSERT_TRUE(w.Finish().ok());
  Status s = ParseError(out.bytes());
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("extended headers of one entry exceed"));
}

TEST(TarReaderHostile, LinksAndSizesThatDisagree) {
  // A symlink with data: readers disagree about whether it exists, so it is refused.
  Entry sym = Other("s", EntryType::kSymlink, "target");
  sym.size = 3;
  Status s = ParseWith(sym, Bytes("abc"), {});
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("symlink has a non-zero size 3"));
  // Empty link targets.
  Status e = ParseWith(Other("s", EntryType::kSymlink, ""), {}, {});
  EXPECT_EQ(e.code(), StatusCode::kCorruption);
  EXPECT_THAT(e.message(), HasSubstr("empty target"));
  Status h = ParseWith(Other("h", EntryType::kHardlink, ""), {}, {});
  EXPECT_THAT(h.message(), HasSubstr("hard link with an empty target"));
  // Empty name.
  Status n = ParseWith(File("", 0), {}, {});
  EXPECT_EQ(n.code(), StatusCode::kCorruption);
  EXPECT_THAT(n.message(), HasSubstr("empty name"));
}

TEST(TarReaderHostile, ExtendedHeaderThenEndMarker) {
  MemoryOutputStream out;
  TarWriter w(out);
  WriteOptions o;
  o.force_pax_path = true;
  ASSERT_TRUE(w.AppendHeader(File("f", 0), o).ok());
  auto bytes = out.Take();
  bytes.resize(1024);  // keep the 'x' header and its data block, drop the real header
  bytes.resize(bytes.size() + 1024, 0);
  Status s = ParseError(bytes);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("after an extended header"));
}

// --- sizes over 8 GiB -------------------------------------------------------------------------

void CheckHugeEntry(const WriteOptions& opt, Flavor flavor, bool read_data) {
  const uint64_t size = (uint64_t{8} << 30) + 1;  // over the 11-digit octal limit
  MemoryOutputStream header;
  TarWriter w(header, flavor);
  Entry e = File("huge.bin", size);
  auto data_offset = w.AppendHeader(e, opt);
  ASSERT_TRUE(data_offset.ok());
  PiecesInputStream in;
  in.AddBytes(header.Take());
  in.AddZeros(size);
  in.AddBytes(std::vector<uint8_t>(Pad512(size) - size + 1024, 0));
  in.AddBytes(Bytes("trailer"));
  uint64_t teed = 0;
  TarReader reader(in, [&](ByteSpan raw) {
    teed += raw.size();
    return Status::Ok();
  });
  auto entry = reader.Next();
  ASSERT_TRUE(entry.ok()) << entry.status().ToString();
  ASSERT_TRUE(entry->has_value());
  EXPECT_EQ((*entry)->size, size);
  EXPECT_EQ((*entry)->data_offset, *data_offset);
  if (read_data) {
    std::vector<uint8_t> buf(1 << 20);
    uint64_t total = 0;
    for (;;) {
      auto n = reader.ReadData(buf);
      ASSERT_TRUE(n.ok());
      if (*n == 0) break;
      total += *n;
    }
    EXPECT_EQ(total, size);
  }
  auto end = reader.Next();
  ASSERT_TRUE(end.ok()) << end.status().ToString();
  EXPECT_FALSE(end->has_value());
  auto drained = reader.DrainToEnd();
  ASSERT_TRUE(drained.ok());
  EXPECT_EQ(*drained, 7u);
  EXPECT_EQ(teed, *data_offset + Pad512(size) + 1024 + 7);
  EXPECT_EQ(reader.offset(), teed);
}

TEST(TarReaderHuge, PaxSizeOver8GiB) {
  CheckHugeEntry(WriteOptions{}, Flavor::kPax, /*read_data=*/false);
}

TEST(TarReaderHuge, Base256SizeOver8GiB) {
  CheckHugeEntry(WriteOptions{}, Flavor::kGnu, /*read_data=*/true);
}

// --- reader API -------------------------------------------------------------------------------

TEST(TarReader, TeeErrorStopsTheParseAndSticks) {
  auto tar = Archive(Flavor::kPax, {{File("a", 1000), RandomBytes(1000, 1)}, {File("b", 0), {}}});
  MemoryInputStream in(tar);
  uint64_t seen = 0;
  TarReader reader(in, [&](ByteSpan raw) {
    seen += raw.size();
    return seen > 600 ? Status::IoError("sink full") : Status::Ok();
  });
  ASSERT_TRUE(reader.Next().ok());
  auto second = reader.Next();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().message(), "sink full");
  auto third = reader.Next();
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status(), second.status());
  std::vector<uint8_t> buf(10);
  EXPECT_EQ(reader.ReadData(buf).status(), second.status());
}

TEST(TarReader, DrainBeforeEndIsRefused) {
  auto tar = Archive(Flavor::kPax, {{File("a", 0), {}}});
  MemoryInputStream in(tar);
  TarReader reader(in);
  auto d = reader.DrainToEnd();
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kFailedPrecondition);
}

TEST(TarReader, ReadDataBeforeNextAndAfterEndReturnsZero) {
  auto tar = Archive(Flavor::kPax, {{File("a", 3), Bytes("abc")}});
  MemoryInputStream in(tar);
  TarReader reader(in);
  std::vector<uint8_t> buf(10);
  auto n = reader.ReadData(buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(reader.offset(), 0u);
  ASSERT_TRUE(reader.Next().ok());
  n = reader.ReadData(MutableByteSpan(buf).first(2));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  n = reader.ReadData(buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(buf[0], 'c');
  n = reader.ReadData(buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(reader.offset(), 515u);  // padding is consumed by the next Next()
}

TEST(TarReader, SourceErrorsPropagate) {
  class Failing final : public InputStream {
   public:
    Result<size_t> Read(MutableByteSpan) override { return Status::IoError("network down"); }
  } failing;
  TarReader reader(failing);
  auto e = reader.Next();
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kIoError);
}

TEST(TarReader, FuzzSeedsParse) {
  // The committed seeds are real GNU tar output (pax, gnu, ustar, v7): they must parse.
  const char* env = std::getenv("LAZYCRYPT_SOURCE_DIR");
  fs::path dir = env != nullptr ? fs::path(env) / "tar" / "fuzz_corpus"
                                : fs::path(__FILE__).parent_path() / "fuzz_corpus";
  int count = 0;
  for (const auto& f : fs::directory_iterator(dir)) {
    SCOPED_TRACE(f.path().string());
    auto bytes = ReadFileBytes(f.path());
    ASSERT_TRUE(bytes.ok());
    auto p = ParseBytes(*bytes);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_GE(p->entries.size(), 2u);
    ++count;
  }
  EXPECT_GE(count, 4);
}

TEST(TarReader, EntryTypeNames) {
  EXPECT_EQ(EntryTypeName(EntryType::kRegular), "regular file");
  EXPECT_EQ(EntryTypeName(EntryType::kHardlink), "hard link");
  EXPECT_EQ(EntryTypeName(EntryType::kSymlink), "symlink");
  EXPECT_EQ(EntryTypeName(EntryType::kCharDevice), "character device");
  EXPECT_EQ(EntryTypeName(EntryType::kBlockDevice), "block device");
  EXPECT_EQ(EntryTypeName(EntryType::kDirectory), "directory");
  EXPECT_EQ(EntryTypeName(EntryType::kFifo), "fifo");
}

TEST(TarReader, NamesInMessagesAreEscapedAndShortened) {
  WriteOptions o;
  o.typeflag = 'Z';
  Status s = ParseWith(File("bad\nname'" + std::string(1000, 'x'), 0), {}, o);
  EXPECT_THAT(s.message(), HasSubstr("bad\\x0aname\\x27"));
  EXPECT_LT(s.message().size(), 400u);
}

}  // namespace
}  // namespace lazycrypt::tar
