// `lazycrypt`: converts, inspects, verifies and decrypts encrypted container images in OCI layouts
// and registries.
// A thin main: CLI11 parses the flags, tools/commands.cc does the work, a failed Status is printed
// as "lazycrypt: <message>" with exit code 1.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cstdio>

#include "common/version.h"
#include "crypto/process_hardening.h"
#include "tools/commands.h"
#include "tools/index.h"
#include "tools/mount.h"
#include "tools/pull.h"
#include "tools/record.h"
#include "tools/status.h"

namespace {

using namespace lazycrypt::tools;

constexpr const char* kImageHelp = "oci:DIR[:TAG] (an OCI layout) or docker://HOST/REPO[:TAG] (a registry)";

void AddKeyOption(CLI::App* cmd, std::vector<std::string>& keys, bool required) {
  auto* opt = cmd->add_option("--key,-k", keys,
                              "private key file (PEM or DER; RSA or EC), PATH or PATH:PASSWORD as "
                              "in skopeo --decryption-key, or provider:NAME[:PARAMS] for a key "
                              "provider of $OCICRYPT_KEYPROVIDER_CONFIG; repeatable, tried in order");
  opt->allow_extra_args(false);  // one value per --key: positionals may follow
  if (required) opt->required();
}

void AddTransportOptions(CLI::App* cmd, TransportFlags& flags) {
  cmd->add_flag("--plain-http", flags.plain_http, "docker://: talk plain HTTP to the registry");
  cmd->add_option("--tls-verify", flags.tls_verify,
                  "docker://: verify the registry's TLS certificate (--tls-verify=false to skip)")
      ->default_str("true");
  cmd->add_option("--authfile", flags.authfile,
                  "docker://: credentials file in docker's config.json format (default: "
                  "$REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, ~/.docker/config.json)");
  cmd->add_option("--hosts-dir", flags.hosts_dir,
                  std::string("docker://: containerd hosts directory, DIR/HOST[:PORT]/hosts.toml "
                              "(mirrors tried first, per-host TLS and headers) with "
                              "DIR/_default/hosts.toml as fallback (default: ") +
                      kDefaultHostsDir + " if it exists; --hosts-dir '' for none)")
      ->each([&flags](const std::string&) { flags.hosts_dir_given = true; });
}

void AddLayerSourceOptions(CLI::App* cmd, LayerSourceFlags& flags) {
  cmd->add_option("SOURCE", flags.source,
                  std::string("an image, ") + kImageHelp +
                      " (with --layer N), or a lazycrypt blob file (with --descriptor)")
      ->required();
  cmd->add_option("--layer,-l", flags.layer,
                  "layer index in the image (default: its only lazycrypt layer)");
  cmd->add_option("--platform", flags.platform,
                  "OS/ARCH[/VARIANT] of a multi-platform image (default linux/amd64)");
  cmd->add_option("--descriptor,-d", flags.descriptor,
                  "descriptor JSON of a blob file (as `layer encrypt` writes it)");
  AddTransportOptions(cmd, flags.transport);
}

// The subcommand the command line chose, deepest first ("layer ls"); `app` itself when none.
const CLI::App* ChosenCommand(const CLI::App& app, std::string& path) {
  const CLI::App* cur = &app;
  for (;;) {
    std::vector<CLI::App*> chosen = cur->get_subcommands();
    if (chosen.empty()) return cur;
    cur = chosen.front();
    path += (path.empty() ? "" : " ") + cur->get_name();
  }
}

// "--key/-k, --json, ..., --help/-h[, and the global --quiet/-q]; arguments: SRC" (hidden
// options left out).
std::string DescribeFlags(const CLI::App& cmd, bool with_global) {
  std::string flags, arguments;
  for (const CLI::Option* opt : cmd.get_options()) {
    if (opt->get_group().empty()) continue;  // hidden
    if (opt->nonpositional()) {
      std::string names;
      for (const std::string& l : opt->get_lnames()) names += (names.empty() ? "--" : "/--") + l;
      for (const std::string& sn : opt->get_snames()) names += (names.empty() ? "-" : "/-") + sn;
      flags += (flags.empty() ? "" : ", ") + names;
    } else {
      arguments += (arguments.empty() ? "" : " ") + opt->get_name();
    }
  }
  std::string out = flags.empty() ? "no flags" : flags;
  if (with_global) out += ", and the global --quiet/-q";
  if (!arguments.empty()) out += "; arguments: " + arguments;
  return out;
}

// CLI11's ExtrasError says only "The following argument was not expected: --bogus": name the
// command, what it did not take, and what it does take.
std::string ExtrasMessage(const CLI::App& app) {
  std::string path;
  const CLI::App* cmd = ChosenCommand(app, path);
  std::string unknown_options, unexpected;
  for (const std::string& arg : app.remaining(/*recurse=*/true)) {
    if (arg == "--") continue;
    std::string& list = arg.size() > 1 && arg[0] == '-' ? unknown_options : unexpected;
    list += (list.empty() ? "" : ", ") + ("'" + arg + "'");
  }
  const std::string name = path.empty() ? "lazycrypt" : "lazycrypt " + path;
  std::string what;
  if (!unknown_options.empty()) what = "does not take " + unknown_options;
  if (!unexpected.empty()) {
    what += (what.empty() ? "" : ", and ") + std::string("has no place for the argument") +
            (unexpected.find(',') == std::string::npos ? " " : "s ") + unexpected;
  }
  if (what.empty()) what = "got arguments it does not take";
  return "'" + name + "' " + what + " (its flags: " + DescribeFlags(*cmd, cmd != &app) +
         ")\nRun '" + name + " --help' for more information.";
}

}  // namespace

int main(int argc, char** argv) {
  lazycrypt::crypto::HardenProcess("lazycrypt");  // before any key or plaintext
  CLI::App app{
      "lazycrypt: encrypted container images whose layers can be served lazily.\n"
      "Converts OCI images (OCI layouts or registries) to the lazycrypt chunked format (or to "
      "standard ocicrypt), inspects, verifies and decrypts them, and changes their recipients. Keys "
      "and recipients are the RSA/EC key pairs ocicrypt/skopeo use (JWE)."};
  app.set_version_flag("--version", lazycrypt::VersionLine("lazycrypt"));
  app.require_subcommand(1);
  app.fallthrough();  // --quiet after the command name too

  Output io;
  io.progress = ::isatty(::fileno(stderr)) == 1;
  app.add_flag("--quiet,-q", io.quiet, "no progress or per-layer lines on stderr");

  EncryptFlags encrypt_flags;
  auto* encrypt = app.add_subcommand("encrypt", "encrypt the layers of an image for recipients");
  encrypt->add_option("--recipient,-r", encrypt_flags.recipients,
                      "recipient public key as jwe:PUB.pem (RSA or EC P-256/384/521), or "
                      "provider:NAME[:PARAMS] for a key provider of $OCICRYPT_KEYPROVIDER_CONFIG; "
                      "repeatable")
      ->required()
      ->allow_extra_args(false);
  encrypt->add_option("--layers", encrypt_flags.layers,
                      "comma-separated layer indices to encrypt, 0 = base layer (default: all)");
  encrypt->add_option("--chunk-size", encrypt_flags.chunk_size,
                      "lazycrypt target chunk size, 64KiB..16MiB (default 1MiB)");
  encrypt->add_option("--format", encrypt_flags.format,
                      "lazycrypt (chunked AES-256-GCM, lazy mounts), ocicrypt (AES-256-CTR + "
                      "HMAC, what skopeo writes) or ocicrypt-estargz (the layer as eStargz, then "
                      "ocicrypt: any imgcrypt/skopeo node decrypts it)")
      ->capture_default_str();
  encrypt->add_option("--threads", encrypt_flags.threads, "writer threads (0 = one per core)")
      ->capture_default_str();
  encrypt->add_option("--zstd-level", encrypt_flags.zstd_level,
                      "zstd level for chunks (1..19; 2 makes blobs ~1.5 % larger than 3 for a fifth "
                      "less CPU)")
      ->capture_default_str();
  encrypt->add_option("--prefetch-list", encrypt_flags.prefetch_list,
                      "file of paths (one per line as in the image, leading / optional, # "
                      "comments) whose files a lazy mount fetches first; each is resolved in the "
                      "merged image (symlinks and hard links followed) and marked in the layer "
                      "that holds its file, reported per path (lazycrypt and ocicrypt-estargz formats)");
  AddTransportOptions(encrypt, encrypt_flags.transport);
  encrypt->add_option("SRC", encrypt_flags.src, std::string("source image: ") + kImageHelp)->required();
  encrypt->add_option("DST", encrypt_flags.dst,
                      std::string("destination image (tag defaults to latest): ") + kImageHelp)
      ->required();

  DecryptFlags decrypt_flags;
  auto* decrypt = app.add_subcommand("decrypt", "decrypt every encrypted layer of an image");
  AddKeyOption(decrypt, decrypt_flags.keys, /*required=*/true);
  decrypt->add_option("--layer-compression", decrypt_flags.layer_compression,
                      "compression of decrypted lazycrypt layers: zstd, gzip or none")
      ->capture_default_str();
  AddTransportOptions(decrypt, decrypt_flags.transport);
  decrypt->add_option("SRC", decrypt_flags.src, std::string("encrypted image: ") + kImageHelp)->required();
  decrypt->add_option("DST", decrypt_flags.dst,
                      std::string("destination image (tag defaults to latest): ") + kImageHelp)
      ->required();

  InspectFlags inspect_flags;
  auto* inspect = app.add_subcommand(
      "inspect", "describe an image's layers, ciphers and recipients; with a key, its contents");
  AddKeyOption(inspect, inspect_flags.keys, /*required=*/false);
  inspect->add_flag("--json", inspect_flags.json, "print JSON");
  inspect->add_flag("--files", inspect_flags.files, "with --key: list the files of lazycrypt layers");
  AddTransportOptions(inspect, inspect_flags.transport);
  inspect->add_option("SRC", inspect_flags.src, std::string("image: ") + kImageHelp)->required();

  VerifyFlags verify_flags;
  auto* verify = app.add_subcommand(
      "verify",
      "fetch and authenticate every blob of an image: every chunk of lazycrypt layers, the HMAC "
      "of ocicrypt layers, the digest of the rest; exit 0 only if all verify");
  AddKeyOption(verify, verify_flags.keys, /*required=*/true);
  AddTransportOptions(verify, verify_flags.transport);
  verify->add_option("SRC", verify_flags.src, std::string("image: ") + kImageHelp)->required();

  IndexFlags index_flags;
  auto* index_cmd = app.add_subcommand(
      "index",
      "make the seekable index of each standard ocicrypt (AES-CTR, gzip) layer of an image in a "
      "registry and push it as an OCI referrer of the image manifest (every platform of a "
      "multi-platform image), so the lazycrypt snapshotter serves those layers lazily; the layers "
      "are read once and their HMAC checked; nothing is pushed unless all pass");
  AddKeyOption(index_cmd, index_flags.keys, /*required=*/true);
  AddTransportOptions(index_cmd, index_flags.transport);
  index_cmd->add_option("--span-size", index_flags.span_size,
                        "uncompressed bytes between checkpoints, e.g. 512KiB (the default); "
                        "smaller spans fetch less per read and make a larger index");
  index_cmd->add_option("--prefetch-list", index_flags.prefetch_list,
                        "file of paths (one per line, as `encrypt --prefetch-list` and `lazycrypt "
                        "record` write them) whose files a lazy mount fetches first; each is "
                        "resolved in the merged image (symlinks and hard links followed) and "
                        "marked, sealed, in the index of the layer that holds its file; reported "
                        "per path");
  index_cmd->add_flag("--force", index_flags.force,
                      "push a new index even when the image already has one");
  index_cmd->add_flag("--json", index_flags.json, "the report as JSON on stdout");
  index_cmd->add_option("IMAGE", index_flags.image, "docker://HOST/REPO[:TAG] (a registry)")
      ->required();

  auto* recipients = app.add_subcommand(
      "recipients",
      "add or remove recipients of an encrypted image without re-encrypting it (layer blobs are "
      "copied unchanged; only the wrapped keys in the manifest change)");
  recipients->require_subcommand(1);
  RecipientsFlags recipients_add_flags, recipients_remove_flags;
  recipients_remove_flags.remove = true;
  auto add_recipients_command = [&](const char* name, const char* help, RecipientsFlags& flags) {
    auto* cmd = recipients->add_subcommand(name, help);
    AddKeyOption(cmd, flags.keys, /*required=*/true);
    cmd->add_option("--recipient,-r", flags.recipients,
                    "recipient public key as jwe:PUB.pem; repeatable")
        ->required()
        ->allow_extra_args(false);
    AddTransportOptions(cmd, flags.transport);
    cmd->add_option("SRC", flags.src, std::string("encrypted image: ") + kImageHelp)->required();
    cmd->add_option("DST", flags.dst,
                    std::string("destination image (tag defaults to latest): ") + kImageHelp)
        ->required();
    return cmd;
  };
  auto* recipients_add = add_recipients_command(
      "add", "wrap every encrypted layer's key for more recipients (--key must open the layers)",
      recipients_add_flags);
  auto* recipients_remove = add_recipients_command(
      "remove",
      "drop recipients from every encrypted layer (refuses to remove the last one; only "
      "recipients named by key id, as lazycrypt writes them, can be removed). Does not revoke "
      "keys already handed out",
      recipients_remove_flags);

  auto* layer = app.add_subcommand("layer", "work on a single lazycrypt layer blob (debugging)");
  layer->require_subcommand(1);

  LayerEncryptFlags layer_encrypt_flags;
  auto* layer_encrypt = layer->add_subcommand(
      "encrypt", "encrypt one layer (tar, tar+gzip, tar+zstd) into a lazycrypt blob");
  layer_encrypt->add_option("--recipient,-r", layer_encrypt_flags.recipients,
                            "recipient public key as jwe:PUB.pem; repeatable")
      ->required()
      ->allow_extra_args(false);
  layer_encrypt->add_option("--chunk-size", layer_encrypt_flags.chunk_size,
                            "target chunk size, 64KiB..16MiB (default 1MiB)");
  layer_encrypt->add_option("--threads", layer_encrypt_flags.threads, "writer threads (0 = one per core)");
  layer_encrypt->add_option("--zstd-level", layer_encrypt_flags.zstd_level, "zstd level (1..19)")
      ->capture_default_str();
  layer_encrypt->add_option("--descriptor-out,-o", layer_encrypt_flags.descriptor_out,
                            "write the descriptor JSON here (default: stdout)");
  layer_encrypt->add_option("INPUT", layer_encrypt_flags.input, "layer file, or - for stdin")->required();
  layer_encrypt->add_option("OUTPUT", layer_encrypt_flags.output, "lazycrypt blob to write")->required();

  LayerDecryptFlags layer_decrypt_flags;
  auto* layer_decrypt =
      layer->add_subcommand("decrypt", "decrypt one lazycrypt layer back to its tar stream");
  AddKeyOption(layer_decrypt, layer_decrypt_flags.keys, /*required=*/true);
  AddLayerSourceOptions(layer_decrypt, layer_decrypt_flags.layer);
  layer_decrypt->add_flag("--zstd", layer_decrypt_flags.zstd, "write tar+zstd instead of tar");
  layer_decrypt->add_option("OUTPUT", layer_decrypt_flags.output, "file to write")->required();

  LayerLsFlags layer_ls_flags;
  auto* layer_ls = layer->add_subcommand("ls", "list the files of a lazycrypt layer (reads only its TOC)");
  AddKeyOption(layer_ls, layer_ls_flags.keys, /*required=*/true);
  AddLayerSourceOptions(layer_ls, layer_ls_flags.layer);
  layer_ls->add_flag("--long", layer_ls_flags.long_format, "mode, owner, size, mtime, link target");

  LayerCatFlags layer_cat_flags;
  auto* layer_cat = layer->add_subcommand(
      "cat", "print one file of a lazycrypt layer, fetching only the chunks that hold it");
  AddKeyOption(layer_cat, layer_cat_flags.keys, /*required=*/true);
  AddLayerSourceOptions(layer_cat, layer_cat_flags.layer);
  layer_cat->add_option("PATH", layer_cat_flags.path, "path of the file in the layer")->required();
  layer_cat->add_flag("--stats", layer_cat_flags.stats,
                      "report on stderr how much of the blob was read");

  MountFlags mount_flags;
  auto* mount = app.add_subcommand(
      "mount",
      "mount one lazycrypt layer of an image read-only with FUSE, fetching and decrypting only "
      "what is read; serves until SIGINT/SIGTERM or `lazycrypt umount` (or --daemon)");
  AddKeyOption(mount, mount_flags.keys, /*required=*/true);
  mount->add_option("--layer,-l", mount_flags.layer,
                    "layer index in the manifest (default: the image's only lazycrypt layer)");
  mount->add_option("--platform", mount_flags.platform,
                    "OS/ARCH[/VARIANT] of a multi-platform image (default linux/amd64)");
  mount->add_option("--cache-dir", mount_flags.cache_dir,
                    "keep fetched chunk ciphertext on disk here (reused by later mounts; default: "
                    "memory only)");
  mount->add_option("--cache-size", mount_flags.cache_size,
                    "cap of the disk cache, e.g. 2GiB (default 10GiB)");
  mount->add_flag("--no-prefetch", mount_flags.no_prefetch,
                  "do not fetch the files the layer marks for prefetch (otherwise fetched in the background from the start; reads of them wait for that fetch)");
  mount->add_flag("--allow-other", mount_flags.allow_other,
                  "let other users read the mount (FUSE allow_other; needs root or "
                  "user_allow_other in /etc/fuse.conf); default: only the mounting user");
  mount->add_flag("--log-file-names", mount_flags.log_file_names,
                  "debugging: name files by their decrypted paths in log lines (default: inode "
                  "numbers only; the names in a layer are confidential)");
  mount->add_flag("--no-verify", mount_flags.no_verify,
                  "do not verify the layer in the background (by default every chunk is fetched "
                  "and hashed against the layer's diff_id, the TOC matched against the tar, and "
                  "a layer that fails is quarantined: its reads fail with EIO)");
  mount->add_option("--background-rate", mount_flags.background_rate,
                    "complete the layer into --cache-dir in the background at this rate, e.g. "
                    "20MiB/s (default: off; the verification fetches it all anyway, at this rate "
                    "when given, else as fast as the registry allows)");
  mount->add_option("--toc-max-bytes", mount_flags.toc_max_bytes,
                    "refuse a layer whose TOC is larger, e.g. 64MiB (default: the format's 256MiB)");
  mount->add_option("--toc-max-chunks", mount_flags.toc_max_chunks,
                    "refuse a layer with more chunks (default: the format's 16777216)");
  mount->add_option("--toc-max-entries", mount_flags.toc_max_entries,
                    "refuse a layer with more files (default: the format's 8388608)");
  mount->add_flag("--daemon", mount_flags.daemon,
                  "mount, print the result and return; serve from a background process");
  mount->add_option("--log", mount_flags.log_file,
                    "--daemon: append the serving process's messages here (default /dev/null)");
  mount->add_option("--stats-file", mount_flags.stats_file,
                    std::string("write statistics (JSON) here every second (default ") +
                        kStatsDir + "/<hash of the mountpoint>.json)");
  mount->add_option("--registry-timeout", mount_flags.registry_timeout_sec,
                    "seconds per registry request attempt")
      ->group("");
  mount->add_option("--registry-attempts", mount_flags.registry_attempts,
                    "attempts per registry request")
      ->group("");
  mount->add_option("--record", mount_flags.record_file,
                    "when the mount ends, write the files read through it to FILE (first access "
                    "order, one absolute path per line: the `encrypt --prefetch-list` format)");
  AddTransportOptions(mount, mount_flags.transport);
  mount->add_option("SRC", mount_flags.src, std::string("image: ") + kImageHelp)->required();
  mount->add_option("MOUNTPOINT", mount_flags.mountpoint, "an existing directory")->required();

  UmountFlags umount_flags;
  auto* umount = app.add_subcommand(
      "umount", "unmount a `lazycrypt mount` and wait for its process to exit");
  umount->add_option("--stats-file", umount_flags.stats_file,
                     "the mount's --stats-file, if it was given one");
  umount->add_option("MOUNTPOINT", umount_flags.mountpoint, "the mountpoint")->required();

  StatsFlags stats_flags;
  auto* stats = app.add_subcommand(
      "stats", "statistics of a `lazycrypt mount`: bytes fetched, chunks opened, cache hits, "
               "how much of the layer is present");
  stats->add_flag("--json", stats_flags.json, "print JSON");
  stats->add_option("--stats-file", stats_flags.stats_file,
                    "the mount's --stats-file, if it was given one");
  stats->add_option("MOUNTPOINT", stats_flags.mountpoint, "the mountpoint")->required();

  PullFlags pull_flags;
  auto* pull = app.add_subcommand(
      "pull", "pull an image into containerd so that lazycrypt-snapshotter mounts its lazycrypt "
              "layers lazily (other layers are downloaded and unpacked as containerd does)");
  pull->add_option("--address,-a", pull_flags.address, "containerd's socket")
      ->default_str("/run/containerd/containerd.sock");
  pull->add_option("--namespace,-n", pull_flags.ns, "containerd namespace")->default_str("default");
  pull->add_option("--snapshotter", pull_flags.snapshotter, "containerd snapshotter")
      ->default_str("lazycrypt");
  pull->add_option("--platform", pull_flags.platform, "os/arch[/variant] chosen from an index")
      ->default_str("linux/amd64");
  AddTransportOptions(pull, pull_flags.transport);
  pull->add_option("REF", pull_flags.ref, "HOST/REPO[:TAG][@DIGEST] (docker:// optional)")
      ->required();

  RecordFlags record_flags;
  auto* record = app.add_subcommand(
      "record",
      "run an image's entrypoint (or CMD after --) with runc on lazy mounts of its layers for a "
      "while and write the files it read: the list `encrypt --prefetch-list` takes (root)");
  AddKeyOption(record, record_flags.keys, /*required=*/false);
  record->add_option("--output,-o", record_flags.output,
                     "write the files read here, one absolute path per line, first access order")
      ->required();
  record->add_option("--period", record_flags.period,
                     "stop the container after this long if it has not exited (e.g. 10s, 500ms, 2m)")
      ->default_str("10s");
  record->add_option("--platform", record_flags.platform,
                     "os/arch[/variant] chosen from an index (default linux/amd64)");
  record->add_option("--runc", record_flags.runc, "runc executable (default: runc in PATH)");
  AddTransportOptions(record, record_flags.transport);
  record->add_option("SRC", record_flags.src, std::string("image: ") + kImageHelp)->required();
  record->add_option("CMD", record_flags.command,
                     "command and arguments to run instead of the image's Entrypoint + Cmd (after --)");

  StatusFlags status_flags;
  auto* status_cmd = app.add_subcommand(
      "status", "what lazycrypt-snapshotter has mounted: per layer the share present, bytes "
                "fetched, cache hits/misses, auth failures (from its metrics endpoint)");
  status_cmd->add_option("--address", status_flags.address,
                         "HOST:PORT of the snapshotter's metrics endpoint");
  status_cmd->add_option("--config", status_flags.config,
                         std::string("the snapshotter's config file, for its [metrics] address "
                                     "(default ") + kDefaultSnapshotterConfig + ")");
  status_cmd->add_flag("--json", status_flags.json, "print the daemon's JSON");

  // Name an unknown command (CLI11 would only say that a subcommand is required).
  CLI::App* parent = &app;
  for (int i = 1; i < argc && i <= 2; ++i) {
    std::string word = argv[i];
    if (word.empty() || word[0] == '-') break;
    CLI::App* sub = nullptr;
    try {
      sub = parent->get_subcommand(word);
    } catch (const CLI::OptionNotFound&) {
    }
    if (sub == nullptr) {
      std::string known;
      for (const CLI::App* s : parent->get_subcommands({})) known += (known.empty() ? "" : ", ") + s->get_name();
      std::fprintf(stderr, "lazycrypt: unknown command '%s' (commands: %s)\nRun with --help for more information.\n",
                   word.c_str(), known.c_str());
      return 1;
    }
    if (sub->get_subcommands({}).empty()) break;
    parent = sub;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ExtrasError&) {
    std::fprintf(stderr, "lazycrypt: %s\n", ExtrasMessage(app).c_str());
    return 1;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lazycrypt: %s\nRun with --help for more information.\n", e.what());
    return 1;
  }

  lazycrypt::Status status;
  if (*encrypt) {
    status = RunEncrypt(encrypt_flags, io);
  } else if (*decrypt) {
    status = RunDecrypt(decrypt_flags, io);
  } else if (*inspect) {
    status = RunInspect(inspect_flags, io);
  } else if (*verify) {
    status = RunVerify(verify_flags, io);
  } else if (*index_cmd) {
    status = RunIndex(index_flags, io);
  } else if (*recipients_add) {
    status = RunRecipients(recipients_add_flags, io);
  } else if (*recipients_remove) {
    status = RunRecipients(recipients_remove_flags, io);
  } else if (*layer_encrypt) {
    status = RunLayerEncrypt(layer_encrypt_flags, io);
  } else if (*layer_decrypt) {
    status = RunLayerDecrypt(layer_decrypt_flags, io);
  } else if (*layer_ls) {
    status = RunLayerLs(layer_ls_flags, io);
  } else if (*layer_cat) {
    status = RunLayerCat(layer_cat_flags, io);
  } else if (*mount) {
    status = RunMount(mount_flags, io);
  } else if (*umount) {
    status = RunUmount(umount_flags, io);
  } else if (*stats) {
    status = RunStats(stats_flags, io);
  } else if (*status_cmd) {
    status = RunStatus(status_flags, io);
  } else if (*pull) {
    status = RunPull(pull_flags, io);
  } else if (*record) {
    status = RunRecord(record_flags, io);
  }
  if (!status.ok()) {
    std::fprintf(stderr, "lazycrypt: %s\n", status.message().c_str());
    return 1;
  }
  return 0;
}
