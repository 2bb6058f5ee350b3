#include "image/prefetch_plan.h"

#include <string_view>
#include <unordered_map>

#include "common/io.h"
#include "compress/compress.h"
#include "format/toc.h"
#include "image/convert.h"
#include "image/layout.h"

namespace lazycrypt::image {

namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueWhiteout = ".wh..wh..opq";

// A name of the merged view: which layer provides it, and what it is there.
struct Node {
  size_t layer = 0;
  tar::EntryType type = tar::EntryType::kRegular;
  std::string link;
};

using MergedView = std::map<std::string, Node>;

// Everything strictly below `dir` ("." = the root): "dir/..." keys form one contiguous range.
void EraseBelow(MergedView& view, const std::string& dir, size_t below_layer) {
  const std::string prefix = dir == "." ? "" : dir + "/";
  auto it = view.lower_bound(prefix);
  while (it != view.end() && std::string_view(it->first).starts_with(prefix)) {
    it = it->second.layer < below_layer ? view.erase(it) : std::next(it);
  }
}

std::string_view EntryKind(tar::EntryType type) {
  switch (type) {
    case tar::EntryType::kDirectory: return "a directory";
    case tar::EntryType::kCharDevice: return "a character device";
    case tar::EntryType::kBlockDevice: return "a block device";
    case tar::EntryType::kFifo: return "a fifo";
    case tar::EntryType::kSymlink: return "a symlink";
    case tar::EntryType::kHardlink: return "a hard link";
    case tar::EntryType::kRegular: return "a regular file";
  }
  return "an entry of unknown type";
}

class Resolver {
 public:
  explicit Resolver(const std::vector<LayerTree>& layers) : by_name_(layers.size()) {
    for (size_t i = 0; i < layers.size(); ++i) {
      const LayerTree& layer = layers[i];
      if (!layer.readable) continue;
      // An upper layer's whiteouts hide what the layers below hold; its own entries come after.
      for (const std::string& name : layer.whiteouts) {
        view_.erase(name);
        EraseBelow(view_, name, i);
      }
      for (const std::string& dir : layer.opaque_dirs) EraseBelow(view_, dir, i);
      for (const TreeEntry& e : layer.entries) {
        // A non-directory replaces a lower directory with everything in it.
        if (e.type != tar::EntryType::kDirectory) EraseBelow(view_, e.name, i);
        view_[e.name] = Node{i, e.type, e.link};
        by_name_[i][e.name] = &e;  // the last entry of a name wins, as when extracting
      }
    }
  }

  PrefetchResolution Resolve(const std::string& path) const {
    PrefetchResolution r;
    r.path = path;
    std::vector<std::string> todo;  // components still to walk; back() is next
    auto push_path = [&todo](std::string_view p) {
      std::vector<std::string> parts;
      size_t start = 0;
      for (;;) {
        size_t slash = p.find('/', start);
        parts.emplace_back(p.substr(start, slash == std::string_view::npos ? slash : slash - start));
        if (slash == std::string_view::npos) break;
        start = slash + 1;
      }
      todo.insert(todo.end(), parts.rbegin(), parts.rend());
    };
    push_path(path);
    std::vector<std::string> walked;  // the resolved directory so far (never above the root)
    int hops = 0;
    while (!todo.empty()) {
      std::string part = std::move(todo.back());
      todo.pop_back();
      if (part.empty() || part == ".") continue;
      if (part == "..") {
        if (!walked.empty()) walked.pop_back();  // ".." at the image root stays there
        continue;
      }
      std::string candidate = Join(walked, part);
      bool more = false;  // components follow: the candidate must be a directory
      for (const std::string& t : todo) more = more || !t.empty();
      auto found = view_.find(candidate);
      if (found == view_.end()) {
        if (!HasChildren(candidate)) {
          r.reason = more ? "not found (/" + candidate + " does not exist)" : "not found";
          return r;
        }
        walked.push_back(std::move(part));  // a directory only its contents imply
        continue;
      }
      const Node& node = found->second;
      if (node.type == tar::EntryType::kSymlink) {
        if (++hops > kMaxPrefetchSymlinkHops) {
          r.reason = "too many levels of symbolic links (" +
                     std::to_string(kMaxPrefetchSymlinkHops) + " followed: a loop?)";
          return r;
        }
        r.via_symlink = true;
        if (node.link.starts_with('/')) walked.clear();  // absolute: from the image root
        push_path(node.link);
        continue;
      }
      if (node.type == tar::EntryType::kDirectory) {
        walked.push_back(std::move(part));
        continue;
      }
      if (more) {
        r.reason = "/" + candidate + " is " + std::string(EntryKind(node.type)) +
                   ", not a directory";
        return r;
      }
      return Final(std::move(r), candidate, node);
    }
    r.reason = "a directory";
    return r;
  }

 private:
  static std::string Join(const std::vector<std::string>& dir, const std::string& part) {
    std::string out;
    for (const std::string& d : dir) out += d + "/";
    return out + part;
  }

  bool HasChildren(const std::string& dir) const {
    const std::string prefix = dir + "/";
    auto it = view_.lower_bound(prefix);
    return it != view_.end() && std::string_view(it->first).starts_with(prefix);
  }

  PrefetchResolution Final(PrefetchResolution r, const std::string& name, const Node& node) const {
    if (node.type == tar::EntryType::kRegular) {
      r.layer = node.layer;
      r.file = name;
      return r;
    }
    if (node.type != tar::EntryType::kHardlink) {
      r.reason = std::string(EntryKind(node.type));
      return r;
    }
    // A hard link shares the data of an entry of its own layer: that entry is what gets marked.
    r.via_hardlink = true;
    const auto& entries = by_name_[node.layer];
    std::string target = node.link;
    for (int hops = 0; hops <= kMaxPrefetchSymlinkHops; ++hops) {
      auto it = entries.find(target);
      if (it == entries.end()) {
        r.reason = "a hard link to " + target + ", which layer " + std::to_string(node.layer) +
                   " does not hold";
        return r;
      }
      const TreeEntry& e = *it->second;
      if (e.type == tar::EntryType::kHardlink) {
        target = e.link;
        continue;
      }
      if (e.type != tar::EntryType::kRegular) {
        r.reason = "a hard link to " + std::string(EntryKind(e.type));
        return r;
      }
      r.layer = node.layer;
      r.file = e.name;
      return r;
    }
    r.reason = "too many levels of hard links";
    return r;
  }

  MergedView view_;
  // Per layer: name → its last entry (hard links name entries of their own layer).
  std::vector<std::unordered_map<std::string, const TreeEntry*>> by_name_;
};

}  // namespace

PrefetchPlan PlanPrefetch(const std::vector<LayerTree>& layers,
                          const std::vector<std::string>& paths,
                          const std::set<size_t>& lazycrypt_layers) {
  PrefetchPlan plan;
  plan.layer_marks.resize(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!layers[i].readable) plan.unread_layers.push_back(i);
  }
  const Resolver resolver(layers);
  std::vector<std::set<std::string>> marked(layers.size());
  for (const std::string& path : paths) {
    PrefetchResolution r = resolver.Resolve(path);
    if (r.layer) {
      if (lazycrypt_layers.contains(*r.layer)) {
        r.marked = true;
        if (marked[*r.layer].insert(r.file).second) plan.layer_marks[*r.layer].push_back(r.file);
      } else {
        r.reason = "in layer " + std::to_string(*r.layer) +
                   ", which is not written as a lazycrypt layer";
      }
    }
    plan.paths.push_back(std::move(r));
  }
  return plan;
}

void AddLayerTreeEntry(LayerTree& tree, std::string name, tar::EntryType type, std::string link) {
  if (name == ".") return;
  const size_t slash = name.rfind('/');
  const std::string parent = slash == std::string::npos ? "." : name.substr(0, slash);
  const std::string_view base =
      std::string_view(name).substr(slash == std::string::npos ? 0 : slash + 1);
  if (base == kOpaqueWhiteout) {
    tree.opaque_dirs.push_back(parent);
    return;
  }
  if (base.starts_with(kWhiteoutPrefix)) {
    const std::string hidden(base.substr(kWhiteoutPrefix.size()));
    tree.whiteouts.push_back(parent == "." ? hidden : parent + "/" + hidden);
    return;
  }
  TreeEntry e;
  e.name = std::move(name);
  e.type = type;
  if (type == tar::EntryType::kHardlink || type == tar::EntryType::kSymlink) e.link = std::move(link);
  tree.entries.push_back(std::move(e));
}

Result<LayerTree> ScanLayerTree(ImageSource& src, const Descriptor& layer) {
  LC_ASSIGN_OR_RETURN(auto blob, src.OpenBlobForScan(layer));
  BlobInputStream raw(*blob);
  std::unique_ptr<InputStream> verifying = NewVerifyingInputStream(raw, layer, "blob");
  LC_ASSIGN_OR_RETURN(auto decompressed, compress::NewDecompressingStream(*verifying));
  tar::TarReader reader(*decompressed);
  LayerTree tree;
  for (;;) {
    LC_ASSIGN_OR_RETURN(std::optional<tar::Entry> entry, reader.Next());
    if (!entry) break;
    LC_ASSIGN_OR_RETURN(std::string name, format::NormalizeEntryName(entry->name));
    std::string link;
    if (entry->type == tar::EntryType::kHardlink) {
      LC_ASSIGN_OR_RETURN(link, format::NormalizeEntryName(entry->link_name));
    } else if (entry->type == tar::EntryType::kSymlink) {
      link = entry->link_name;
    }
    AddLayerTreeEntry(tree, std::move(name), entry->type, std::move(link));
  }
  // Read to the end so that the digest is checked (what follows the archive is not looked at).
  LC_RETURN_IF_ERROR(reader.DrainToEnd().status());
  uint8_t rest[4096];
  for (;;) {
    LC_ASSIGN_OR_RETURN(size_t n, verifying->Read(rest));
    if (n == 0) break;
  }
  return tree;
}

Result<PrefetchPlan> PlanImagePrefetch(ImageSource& src, const Manifest& manifest,
                                       const std::vector<std::string>& paths,
                                       const std::set<size_t>& lazycrypt_layers) {
  std::vector<LayerTree> trees(manifest.layers.size());
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& d = manifest.layers[i];
    if (ClassifyLayer(d.media_type) != LayerKind::kPlain) {
      trees[i].readable = false;
      continue;
    }
    auto tree = ScanLayerTree(src, d);
    if (!tree.ok()) {
      return tree.status().WithContext(LayerName(i, d) + ": resolving the prefetch list");
    }
    trees[i] = std::move(tree).value();
  }
  return PlanPrefetch(trees, paths, lazycrypt_layers);
}

}  // namespace lazycrypt::image
