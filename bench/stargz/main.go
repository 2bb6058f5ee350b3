// lazycrypt-bench-stargz: stargz-snapshotter's library (Debian 13's
// golang-github-containerd-stargz-snapshotter-dev, 0.14.3) served on a unix socket as a containerd
// proxy snapshotter, for bench/coldstart's `stargz` and `stargz-optimized` paths. Debian ships the
// library but not upstream's daemon (cmd/containerd-stargz-grpc); this is a much smaller main of our
// own with upstream's defaults where it matters for the comparison: the in-memory metadata store,
// the filesystem options of fs/config (prefetch of the landmark-marked files, background fetch),
// no credentials (the bench's registry is anonymous; Debian's -dev does not Depend on docker/cli,
// which upstream's docker-config keychain needs), no CRI/kubeconfig keychain, no IPFS, no metrics endpoint.
//
//	usage: lazycrypt-bench-stargz --address SOCK --root DIR [--config TOML] [--log-level LEVEL]
//
// The config file is upstream's format (service.Config: [resolver.host."H".mirrors], fs options
// such as prefetch_timeout_sec, noprefetch, no_background_fetch). SIGINT or SIGTERM: stop serving,
// close the snapshotter (unmounts its layers), exit 0.
package main

import (
	"context"
	"flag"
	"fmt"
	golog "log"
	"net"
	"os"
	"os/signal"
	"path/filepath"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/stargz-snapshotter/fs"
	memorymetadata "github.com/containerd/stargz-snapshotter/metadata/memory"
	"github.com/containerd/stargz-snapshotter/service"
	"github.com/pelletier/go-toml"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "", "unix socket to serve containerd's snapshots API on")
	rootDir := flag.String("root", "", "state directory (snapshots, FUSE mountpoints, cache)")
	configPath := flag.String("config", "", "stargz-snapshotter config file (TOML, upstream's format); none: defaults")
	logLevel := flag.String("log-level", "info", "trace, debug, info, warn, error")
	flag.Parse()
	if *address == "" || *rootDir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: lazycrypt-bench-stargz --address SOCK --root DIR [--config TOML] [--log-level LEVEL]")
		os.Exit(2)
	}
	if err := run(*address, *rootDir, *configPath, *logLevel); err != nil {
		fmt.Fprintf(os.Stderr, "lazycrypt-bench-stargz: %v\n", err)
		os.Exit(1)
	}
}

func run(address, rootDir, configPath, logLevel string) error {
	lvl, err := logrus.ParseLevel(logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logrus.SetLevel(lvl)
	logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: log.RFC3339NanoFixed})
	ctx := log.WithLogger(context.Background(), log.L)
	// go-fuse logs through the standard library's logger: keep it at debug, as upstream does.
	golog.SetOutput(log.G(ctx).WriterLevel(logrus.DebugLevel))

	var config service.Config
	if configPath != "" {
		tree, err := toml.LoadFile(configPath)
		if err != nil {
			return fmt.Errorf("config %q: %w", configPath, err)
		}
		if err := tree.Unmarshal(&config); err != nil {
			return fmt.Errorf("config %q: %w", configPath, err)
		}
	}
	if err := service.Supported(rootDir); err != nil {
		return fmt.Errorf("root %q: %w", rootDir, err)
	}

	fsOpts := []fs.Option{
		fs.WithMetricsLogLevel(logrus.InfoLevel),
		fs.WithMetadataStore(memorymetadata.NewReader), // upstream's default store
	}
	snapshotter, err := service.NewStargzSnapshotterService(ctx, rootDir, &config,
		service.WithFilesystemOptions(fsOpts...))
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	defer snapshotter.Close()

	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(snapshotter))
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return err
	}
	if err := os.RemoveAll(address); err != nil { // a socket left by an earlier run: EADDRINUSE
		return err
	}
	listener, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- rpc.Serve(listener) }()
	log.G(ctx).WithField("address", address).Info("lazycrypt-bench-stargz ready")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, unix.SIGINT, unix.SIGTERM)
	select {
	case s := <-signals:
		log.G(ctx).Infof("got %v, closing", s)
		rpc.Stop()
		return nil
	case err := <-serveErr:
		return fmt.Errorf("serving %q: %w", address, err)
	}
}
