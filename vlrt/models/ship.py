"""Export the embedded default checkpoint and pack it as the bundle vlrt ships (needs torch).

    python -m vlrt.models.ship                 # -> vlrt/assets/default_bundle.tar.gz and .sha256
    python -m vlrt.models.ship --model xclip   # the multi-grained sibling -> xclip_bundle.tar.gz

Run it after training a new default model, and after any change to what `vlrt export` writes:
`tests/cli/test_demo.py` checks that the shipped bundle equals a fresh export of the checkpoint.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from vlrt.assets import MODELS, default_checkpoint, write_bundle_archive


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="default", help="which embedded model (default: default)")
    p.add_argument("--out", help="archive to write (default: the model's archive in vlrt/assets)")
    args = p.parse_args()
    from vlrt.export import export_checkpoint

    checkpoint = default_checkpoint(args.model)
    name = "default_bundle.tar.gz" if args.model == "default" else f"{args.model}_bundle.tar.gz"
    out = Path(args.out or checkpoint.with_name(name)).resolve()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(checkpoint.parent)  # the manifest records the checkpoint by its name, not this machine's path
        try:
            result = export_checkpoint(checkpoint.name, Path(tmp) / "bundle")
        finally:
            os.chdir(here)
        info = write_bundle_archive(result.bundle, out)
    print(f"{out}: {info['bytes'] / 1e6:.2f} MB, sha256 {info['sha256']}, files {', '.join(info['files'])}; "
          f"export parity min cos {result.report.min_cosine:.9f}")


if __name__ == "__main__":
    main()
