// Not built by CMake or run in CI: a one-off cross-check of lazycrypt's eStargz writer against
// stargz-snapshotter's own reader (Debian's golang-github-containerd-stargz-snapshotter-dev
// 0.14.3, fetched by bench/stargz/build.sh into build/cache/stargz-bench). It opens a decrypted
// eStargz blob (e.g. from `skopeo copy --decryption-key` of an ocicrypt-estargz image) with
// estargz.Open, checks the TOC against the digest given (VerifyTOC) and reads every chunk of
// every regular file through its chunk verifier. Build and run (GOPATH mode, offline):
//
//   R=build/cache/stargz-bench/root; mkdir -p /tmp/gv/src && cp -r estargz/goverify /tmp/gv/src/
//   GOROOT=$R/usr/lib/go-1.24 GOPATH=/tmp/gv:$PWD/$R/usr/share/gocode GO111MODULE=off GOPROXY=off \
//     GOTOOLCHAIN=local CGO_ENABLED=0 $R/usr/lib/go-1.24/bin/go build -o /tmp/gv/goverify goverify
//   /tmp/gv/goverify BLOB sha256:<the layer's containerd.io/snapshot/lazycrypt.estargz-toc-digest>
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	st, _ := f.Stat()
	sr := io.NewSectionReader(f, 0, st.Size())
	r, err := estargz.Open(sr)
	if err != nil {
		fmt.Println("OPEN FAILED:", err)
		os.Exit(1)
	}
	want := digest.Digest(os.Args[2])
	v, err := r.VerifyTOC(want)
	if err != nil {
		fmt.Println("VERIFYTOC FAILED:", err)
		os.Exit(1)
	}
	files, chunks := 0, 0
	var walk func(e *estargz.TOCEntry) error
	walk = func(e *estargz.TOCEntry) error {
		var ferr error
		e.ForeachChild(func(name string, c *estargz.TOCEntry) bool {
			if c.Type == "dir" {
				ferr = walk(c)
				return ferr == nil
			}
			if c.Type != "reg" || c.Size == 0 {
				return true
			}
			files++
			for off := int64(0); off < c.Size; {
				ce, ok := r.ChunkEntryForOffset(c.Name, off)
				if !ok {
					ferr = fmt.Errorf("no chunk for %s at %d", c.Name, off)
					return false
				}
				cv, err := v.Verifier(ce)
				if err != nil {
					ferr = err
					return false
				}
				sec, err := r.OpenFile(c.Name)
				if err != nil {
					ferr = err
					return false
				}
				buf := make([]byte, ce.ChunkSize)
				if _, err := sec.ReadAt(buf, ce.ChunkOffset); err != nil && err != io.EOF {
					ferr = err
					return false
				}
				if _, err := io.Copy(cv, bytes.NewReader(buf)); err != nil {
					ferr = err
					return false
				}
				if !cv.Verified() {
					ferr = fmt.Errorf("chunk of %s at %d does not verify", c.Name, ce.ChunkOffset)
					return false
				}
				chunks++
				off = ce.ChunkOffset + ce.ChunkSize
			}
			return true
		})
		return ferr
	}
	root, ok := r.Lookup("")
	if !ok {
		fmt.Println("no root")
		os.Exit(1)
	}
	if err := walk(root); err != nil {
		fmt.Println("WALK FAILED:", err)
		os.Exit(1)
	}
	_, lm := r.Lookup(estargz.PrefetchLandmark)
	_, nlm := r.Lookup(estargz.NoPrefetchLandmark)
	fmt.Printf("OK: TOC %s verified, %d files, %d chunks verified, prefetch landmark %v, no-prefetch landmark %v\n", want, files, chunks, lm, nlm)
}
