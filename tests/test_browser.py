"""The browser tier: a real headless Chromium opens the run page and the sweep page, as a
person would, on a desktop and a phone-sized window.

It runs where Chromium is installed (Debian: ``apt-get install chromium``; ``$CHROMIUM``
names another binary) and skips with one line elsewhere.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from job.cli import main
from job.pages import PAGE_FILENAME
from tests.conftest import make_arrays

BROWSER = os.environ.get("CHROMIUM") or next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
if not BROWSER:
    pytest.skip(
        "browser tier: no Chromium installed (apt-get install chromium, or set CHROMIUM)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.integration

# Headless Chromium makes no window narrower than 500 px: a large phone held upright.
DESKTOP, PHONE = (1200, 1600), (500, 900)

# Appended to a copy of the page (the pages themselves need no JavaScript): once everything
# has loaded, it writes what a person would notice into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);
  const headline = document.getElementById("headline").getBoundingClientRect();
  const facts = {
    images: document.images.length,
    broken: broken.map(i => i.alt),
    headline: [headline.top, headline.bottom, headline.width],
    headlineText: document.getElementById("headline").innerText,
    viewport: [window.innerWidth, window.innerHeight],
    pageWidth: document.documentElement.scrollWidth,
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(facts);
  document.body.appendChild(out);
});
</script>"""


def chromium(*args: str, size: tuple[int, int]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [
                BROWSER,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


def probe(page: Path, size: tuple[int, int]) -> dict:
    """What the browser saw on ``page``: images, broken ones, where the headline is."""
    probed = page.with_name(f"probed-{size[0]}-{page.name}")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri(), size=size).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(page: Path, shot: Path, size: tuple[int, int]) -> Image.Image:
    chromium(f"--screenshot={shot}", page.as_uri(), size=size)
    image = Image.open(shot)
    image.load()
    return image


@pytest.fixture(scope="module")
def pages_to_open(tmp_path_factory) -> dict[str, Path]:
    """A real run page (a short run on small made-up digits) and a sweep page of two runs."""
    base = tmp_path_factory.mktemp("browser")
    data = base / "digits.npz"
    np.savez(data, **make_arrays())
    for seed in (1, 2):
        args = ["train", "--data", data, "--epochs", 1, "--seed", seed, "--no-export"]
        result = CliRunner().invoke(
            main, [str(a) for a in [*args, "--output-dir", base / f"s{seed}"]]
        )
        assert result.exit_code == 0, result.output
    sweep = base / "sweep.html"
    args = ["report", base / "s1", base / "s2", "--group-by", "recipe", "--format", "html"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--output", sweep]])
    assert result.exit_code == 0, result.output
    return {"run": base / "s1" / PAGE_FILENAME, "sweep": sweep}


@pytest.mark.parametrize("name", ["run", "sweep"])
@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_page_renders_with_every_image_and_the_headline_in_view(pages_to_open, name, size):
    facts = probe(pages_to_open[name], size)
    assert facts["images"] == (4 if name == "run" else 1)
    assert facts["broken"] == []
    top, bottom, width = facts["headline"]
    assert 0 <= top < bottom <= facts["viewport"][1] and width > 0  # seen without scrolling
    assert ("Test accuracy" if name == "run" else "Best test accuracy") in facts["headlineText"]
    assert facts["pageWidth"] <= facts["viewport"][0]  # no sideways scrolling on a phone


def test_a_broken_image_is_noticed(pages_to_open, tmp_path):
    """The probe can fail: a page whose figure does not decode reports it."""
    page = tmp_path / "broken.html"
    text = pages_to_open["run"].read_text()
    page.write_text(text.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    assert probe(page, DESKTOP)["broken"] == ["Accuracy vs epochs"]


@pytest.mark.parametrize("name", ["run", "sweep"])
def test_the_screenshot_shows_a_rendered_page(pages_to_open, name, tmp_path):
    shot = screenshot(pages_to_open[name], tmp_path / f"{name}.png", DESKTOP)
    assert shot.size == DESKTOP
    pixels = np.asarray(shot.convert("L"))
    header = pixels[:200]
    assert header.min() < 60 and header.mean() > 200  # dark text on a light page
    assert len(np.unique(pixels)) > 50  # figures, not a blank or an error page
    buffer = io.BytesIO()
    shot.save(buffer, format="PNG")
    assert buffer.tell() > 10_000
