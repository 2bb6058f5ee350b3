#!/usr/bin/env python3
"""make_tree.py DIR FILES SEED: a node_modules-like tree of FILES small files (100 B - 8 KiB,
most under 2 KiB as in real packages) in packages of 20-200 files, 2-4 directory levels deep.
Deterministic from SEED. Content: text-like (repeated words plus a per-file counter), so the
layer compresses as source code does."""
import os
import random
import sys


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: make_tree.py DIR FILES SEED", file=sys.stderr)
        return 2
    root, files, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    words = [f"w{n:03d}" for n in range(400)] + ["function", "return", "const", "module",
                                                  "exports", "require", "import", "self"]
    os.makedirs(root, exist_ok=True)
    made = 0
    pkg = 0
    while made < files:
        pkg += 1
        base = os.path.join(root, "node_modules", f"pkg{pkg:05d}")
        subdirs = [base] + [os.path.join(base, d) for d in ("lib", "lib/util", "dist", "test")]
        for d in subdirs:
            os.makedirs(d, exist_ok=True)
        count = min(files - made, rng.randint(20, 200))
        for i in range(count):
            # Sizes: log-uniform 100 B .. 8 KiB.
            size = int(100 * (8192 / 100) ** rng.random())
            text = f"// {pkg}/{i}\n" + " ".join(rng.choice(words) for _ in range(size // 5 + 1))
            data = text.encode()[:size]
            d = subdirs[i % len(subdirs)]
            with open(os.path.join(d, f"f{i:04d}.js"), "wb") as f:
                f.write(data)
        made += count
    return 0


if __name__ == "__main__":
    sys.exit(main())
