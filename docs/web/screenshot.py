"""Make docs/web/page.png: the demo's digits model as a web page, after a visitor chose one of
its held-out digits (enlarged 16x so that it can be seen). Needs `make demo` run first, Chromium
and npm.

    .venv/bin/python docs/web/screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from resnext_deploy.web.site import write_site  # noqa: E402
from tests.web.browser import capture_after_choosing  # noqa: E402


def main() -> None:
    export, held_out = ROOT / "exported" / "demo-digits", ROOT / "runs" / "demo" / "held-out"
    digit = sorted(held_out.glob("*_label7.png"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        site, image = Path(tmp) / "site", Path(tmp) / f"digit-{digit.stem}.png"
        write_site(export, site)
        small = Image.open(digit)
        small.resize((small.width * 16, small.height * 16), Image.Resampling.NEAREST).save(image)
        out = ROOT / "docs" / "web" / "page.png"
        capture_after_choosing(site, image, out, (1000, 780))
    print(out)


if __name__ == "__main__":
    main()
