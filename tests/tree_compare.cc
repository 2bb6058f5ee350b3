#include "tests/tree_compare.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace lazycrypt::testing {

namespace fs = std::filesystem;

namespace {

// Relative paths of everything below root ("" is the root itself), sorted, not following
// symlinks.
void Walk(const fs::path& root, const std::string& rel, std::vector<std::string>& out) {
  out.push_back(rel);
  fs::path dir = rel.empty() ? root : root / rel;
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) Walk(root, rel.empty() ? name : rel + "/" + name, out);
}

std::map<std::string, std::string> Xattrs(const fs::path& p) {
  std::map<std::string, std::string> out;
  ssize_t len = ::llistxattr(p.c_str(), nullptr, 0);
  if (len <= 0) return out;
  std::string names(static_cast<size_t>(len), '\0');
  len = ::llistxattr(p.c_str(), names.data(), names.size());
  if (len <= 0) return out;
  names.resize(static_cast<size_t>(len));
  for (size_t pos = 0; pos < names.size();) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty()) continue;
    ssize_t vlen = ::lgetxattr(p.c_str(), name.c_str(), nullptr, 0);
    std::string value(vlen > 0 ? static_cast<size_t>(vlen) : 0, '\0');
    if (vlen > 0) {
      vlen = ::lgetxattr(p.c_str(), name.c_str(), value.data(), value.size());
      value.resize(vlen > 0 ? static_cast<size_t>(vlen) : 0);
    }
    out[name] = value;
  }
  return out;
}

bool SameContent(const fs::path& a, const fs::path& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return false;
  std::vector<char> ba(1 << 16), bb(1 << 16);
  for (;;) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    std::streamsize na = fa.gcount(), nb = fb.gcount();
    if (na != nb) return false;
    if (na == 0) return true;
    if (std::memcmp(ba.data(), bb.data(), static_cast<size_t>(na)) != 0) return false;
  }
}

std::string ReadLink(const fs::path& p) {
  std::string buf(4096, '\0');
  ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size());
  buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return buf;
}

std::string Octal(unsigned v) {
  std::ostringstream s;
  s << std::oct << v;
  return s.str();
}

std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

// For each hardlinked regular file, the first path (in walk order) sharing its inode.
std::map<std::string, std::string> HardlinkCanon(const fs::path& root,
                                                 const std::vector<std::string>& paths) {
  std::map<std::pair<dev_t, ino_t>, std::string> first;
  std::map<std::string, std::string> canon;
  for (const std::string& rel : paths) {
    fs::path p = rel.empty() ? root : root / rel;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink < 2) continue;
    auto [it, inserted] = first.emplace(std::make_pair(st.st_dev, st.st_ino), rel);
    canon[rel] = it->second;
  }
  return canon;
}

}  // namespace

std::vector<std::string> CompareTrees(const fs::path& a, const fs::path& b,
                                      const TreeCompareOptions& options) {
  std::vector<std::string> diffs;
  std::vector<std::string> pa, pb;
  Walk(a, "", pa);
  Walk(b, "", pb);
  std::set<std::string> sa(pa.begin(), pa.end()), sb(pb.begin(), pb.end());
  for (const std::string& p : pa) {
    if (!sb.contains(p)) diffs.push_back(p + ": only in " + a.string());
  }
  for (const std::string& p : pb) {
    if (!sa.contains(p)) diffs.push_back(p + ": only in " + b.string());
  }
  auto canon_a = HardlinkCanon(a, pa);
  auto canon_b = HardlinkCanon(b, pb);
  for (const std::string& rel : pa) {
    if (!sb.contains(rel)) continue;
    std::string name = rel.empty() ? "(root)" : rel;
    fs::path fa = rel.empty() ? a : a / rel;
    fs::path fb = rel.empty() ? b : b / rel;
    struct stat st_a {}, st_b {};
    if (::lstat(fa.c_str(), &st_a) != 0 || ::lstat(fb.c_str(), &st_b) != 0) {
      diffs.push_back(name + ": lstat failed");
      continue;
    }
    bool metadata = !rel.empty() || options.compare_root_metadata;
    if ((st_a.st_mode & S_IFMT) != (st_b.st_mode & S_IFMT)) {
      diffs.push_back(name + ": type " + Octal(st_a.st_mode & S_IFMT) + " != " +
                      Octal(st_b.st_mode & S_IFMT));
      continue;
    }
    if (metadata && st_a.st_mode != st_b.st_mode) {
      diffs.push_back(name + ": mode " + Octal(st_a.st_mode) + " != " + Octal(st_b.st_mode));
    }
    if (metadata && (st_a.st_uid != st_b.st_uid || st_a.st_gid != st_b.st_gid)) {
      diffs.push_back(name + ": owner " + std::to_string(st_a.st_uid) + ":" +
                      std::to_string(st_a.st_gid) + " != " + std::to_string(st_b.st_uid) + ":" +
                      std::to_string(st_b.st_gid));
    }
    if (metadata && options.compare_mtimes &&
        (st_a.st_mtim.tv_sec != st_b.st_mtim.tv_sec || st_a.st_mtim.tv_nsec != st_b.st_mtim.tv_nsec)) {
      diffs.push_back(name + ": mtime " + std::to_string(st_a.st_mtim.tv_sec) + "." +
                      std::to_string(st_a.st_mtim.tv_nsec) + " != " +
                      std::to_string(st_b.st_mtim.tv_sec) + "." + std::to_string(st_b.st_mtim.tv_nsec));
    }
    if (S_ISREG(st_a.st_mode)) {
      if (st_a.st_size != st_b.st_size) {
        diffs.push_back(name + ": size " + std::to_string(st_a.st_size) + " != " +
                        std::to_string(st_b.st_size));
      } else if (!SameContent(fa, fb)) {
        diffs.push_back(name + ": content differs");
      }
      std::string ca = canon_a.contains(rel) ? canon_a[rel] : rel;
      std::string cb = canon_b.contains(rel) ? canon_b[rel] : rel;
      if (ca != cb) diffs.push_back(name + ": hardlinked to '" + ca + "' vs '" + cb + "'");
    } else if (S_ISLNK(st_a.st_mode)) {
      std::string la = ReadLink(fa), lb = ReadLink(fb);
      if (la != lb) diffs.push_back(name + ": link target '" + la + "' != '" + lb + "'");
    } else if (S_ISCHR(st_a.st_mode) || S_ISBLK(st_a.st_mode)) {
      if (st_a.st_rdev != st_b.st_rdev) {
        diffs.push_back(name + ": device " + std::to_string(major(st_a.st_rdev)) + "," +
                        std::to_string(minor(st_a.st_rdev)) + " != " +
                        std::to_string(major(st_b.st_rdev)) + "," + std::to_string(minor(st_b.st_rdev)));
      }
    }
    if (metadata) {
      auto xa = Xattrs(fa), xb = Xattrs(fb);
      if (xa != xb) {
        std::string da, db;
        for (const auto& [k, v] : xa) da += k + "=" + Printable(v) + " ";
        for (const auto& [k, v] : xb) db += k + "=" + Printable(v) + " ";
        diffs.push_back(name + ": xattrs {" + da + "} != {" + db + "}");
      }
    }
  }
  return diffs;
}

TreeCensus CountTree(const fs::path& root) {
  TreeCensus c;
  std::vector<std::string> paths;
  Walk(root, "", paths);
  for (const std::string& rel : paths) {
    fs::path p = rel.empty() ? root : root / rel;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (S_ISREG(st.st_mode)) {
      ++c.regular;
      if (st.st_nlink > 1) ++c.hardlinked;
    } else if (S_ISDIR(st.st_mode)) {
      ++c.dirs;
    } else if (S_ISLNK(st.st_mode)) {
      ++c.symlinks;
    } else if (S_ISCHR(st.st_mode)) {
      ++c.char_devices;
    } else if (S_ISBLK(st.st_mode)) {
      ++c.block_devices;
    } else if (S_ISFIFO(st.st_mode)) {
      ++c.fifos;
    }
    if (!Xattrs(p).empty()) ++c.with_xattrs;
    if (st.st_mtim.tv_nsec != 0) ++c.nonzero_nsec_mtimes;
  }
  return c;
}

}  // namespace lazycrypt::testing
