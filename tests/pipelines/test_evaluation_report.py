"""report.html: self-contained, and it renders its gallery in a real headless browser (Debian's
chromium, installed by the session fixture when missing; the test fails, never skips, without it).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from dpalbum.pipelines.evaluation import report
from dpalbum.pipelines.evaluation.config import ReportConfig
from tests.pipelines.test_evaluation_world import ledger, public_corpus, synthetic_albums

BROWSERS = ("chromium", "chromium-browser")
HEADLESS_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; installed with apt (as root) once per session when missing."""
    found = _find_browser()
    if found:
        return found
    steps = [["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900,
                                  env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/bin:/bin:"
                                       "/usr/sbin:/sbin"})
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"the report test needs chromium; `{' '.join(step)}` failed: {exc}. "
                        "Install Debian's chromium package (apt-get install -y chromium).")
        if done.returncode != 0:
            pytest.fail(f"the report test needs chromium; `{' '.join(step)}` exited "
                        f"{done.returncode}: {done.stderr[-800:]}. Install Debian's chromium "
                        "package (apt-get install -y chromium) as root.")
    found = _find_browser()
    if not found:
        pytest.fail("apt-get installed chromium but no chromium binary is on PATH")
    return found


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _document() -> dict:
    sections = [
        report.section("image_fidelity", internal=True,
                       metrics={"local_fd": 12.5, "kid": 0.01, "precision": 0.7, "recall": 0.6}),
        report.section("caption_agreement", internal=False,
                       metrics={"scene_agreement": 0.9, "protagonist_agreement": float("nan")}),
        report.section("privacy_audit", internal=True, absent="not an audit run"),
    ]
    return report.assemble_metrics(ledger(), sections)


def _render(tmp_path, **config) -> tuple[str, object]:
    plot = _png(np.full((20, 30, 3), 120, dtype=np.uint8))
    html = report.render_report(_document(), ledger(), synthetic_albums(n=5), public_corpus(),
                                plot, ReportConfig(n_gallery_albums=4, n_public_samples=6,
                                                   **config))
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    return html, path


def test_report_is_self_contained_and_complete(tmp_path):
    html, _ = _render(tmp_path, include_internal_metrics=True)
    assert not re.search(r"""(src|href)=['"](?!data:)""", html)  # nothing fetched from outside
    assert "semantic_query" in html and "noise_multiplier" in html  # the ledger table
    assert "local_fd" in html and "not comparable to published FID" in html
    assert "not an audit run" in html  # absent sections say why
    assert "n/a" in html  # NaN shown as n/a
    assert "privacy-utility plot" in html
    assert html.count("class='internal'") >= 1
    assert '<meta name="dpalbum-internal" content="true">' in html


INTERNAL = ("image_fidelity", "privacy_audit")  # the internal sections of _document()


def test_report_defaults_to_released_numbers_only(tmp_path):
    assert ReportConfig().include_internal_metrics is False
    html, _ = _render(tmp_path)
    assert "caption_agreement" in html and "scene_agreement" in html  # released: shown
    for name in INTERNAL:
        assert name not in html and report.SECTION_TITLES[name] not in html, name
    assert "local_fd" not in html and "not an audit run" not in html  # nor their numbers, reasons
    assert "class='internal'" not in html
    assert "<img class='plot'" not in html  # the ε sweep's plot draws internal metrics
    assert '<meta name="dpalbum-internal" content="false">' in html


def _noise_report(noise_source: str | None) -> str:
    ledger_ = ledger() | ({"noise_source": noise_source} if noise_source else {})
    return report.render_report(_document(), ledger_, synthetic_albums(n=2), public_corpus(),
                                None, ReportConfig())


def test_replayable_noise_is_flagged_not_dp():
    warning = "NOT differentially private: noise is replayable from a seed"
    replayable = _noise_report("replayable")
    assert warning in replayable
    assert replayable.index(warning) < replayable.index("<h2>Privacy ledger</h2>")  # on top
    assert warning not in _noise_report("secure")
    older = _noise_report(None)  # a ledger from before noise_source was recorded
    assert warning not in older and "Noise source unknown" in older
    assert "noise source: <b>unknown</b>" in older
    assert "Noise source unknown" not in _noise_report("secure")


def test_inf_epsilon_is_flagged_non_private(tmp_path):
    html = report.render_report(_document(), ledger("inf"), synthetic_albums(n=2),
                                public_corpus(), None, ReportConfig())
    assert "NON-PRIVATE baseline (ε = ∞)" in html and "ε = <b>∞" in html


def test_gallery_renders_in_headless_chromium(tmp_path, chromium):
    _, path = _render(tmp_path, include_internal_metrics=True)  # the internal report: + plot
    done = subprocess.run(
        [chromium, *HEADLESS_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    figures = re.findall(r'<figure class="album" data-album-id="[^"]+" data-loaded="(\d+)/(\d+)"',
                         dom)
    assert len(figures) == 4, dom[:2000]
    assert all(loaded == total == "4" for loaded, total in figures)  # 4 photos each, decoded
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    assert total == 4 * 4 + 6 + 1 and loaded == total  # gallery + public samples + plot
