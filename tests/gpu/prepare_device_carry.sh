#!/usr/bin/env bash
# Run HERE (the CPU machine, repo root) before lending the tree to a GPU
# machine: copies Debian's UCX runtime + headers (and libnuma) into .device/ucx
# with their /usr layout, and makes git ignore .device/. The GPU machine has no
# network and no UCX; run_on_device.sh builds against this copy. Pass
# `carry: [".device"]` to the device run. About 10 MB.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
dest=.device/ucx
rm -rf "$dest" && mkdir -p "$dest"
for pkg in libucx0 libucx-dev libnuma1; do
  dpkg -L "$pkg" | while read -r f; do
    if [ -f "$f" ] || [ -L "$f" ]; then
      mkdir -p "$dest$(dirname "$f")"
      cp -a "$f" "$dest$f"
    fi
  done
done
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.device/' "$exclude" 2>/dev/null || echo '/.device/' >>"$exclude"
du -sh "$dest"
echo "prepared $dest (UCX $(dpkg-query -W -f='${Version}' libucx0)); carry \".device\""
