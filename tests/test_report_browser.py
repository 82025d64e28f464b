"""report.html as a person meets it, built inside a real MLflow run (a temporary sqlite store):
every link opens a run, artifact or metric that exists in that store, and headless Chromium
renders the page to a screenshot in which the page opens with synthetic albums beside public
images and every image decodes. The browser tests skip, saying why, where Chromium is not
installed (CI installs none: Debian's chromium is a few hundred MB for two tests)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from dpalbum.pipelines.evaluation import report
from dpalbum.pipelines.evaluation.config import ReportConfig
from tests.pipelines.test_evaluation_world import ledger, public_corpus, synthetic_albums

UI = "http://127.0.0.1:5000"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install "
    "chromium); the report's links are still checked without it")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", "--virtual-time-budget=5000"]
LINK = re.compile(r"^" + re.escape(UI) + r"/#/experiments/(?P<exp>[^/]+)/runs/(?P<run>[0-9a-f]+)"
                  r"(?:/(?:artifacts/(?P<artifact>.+)|(?P<tab>model-metrics)))?$")


def _document() -> dict:
    return report.assemble_metrics(ledger(), [
        report.section("caption_agreement", internal=False,
                       metrics={"scene_agreement": 0.9, "protagonist_agreement": 0.8,
                                "albums_consistent_90": float("nan")}),
        report.section("evaluation_network", internal=False, metrics={"scene_accuracy": 0.99}),
        report.section("image_fidelity", internal=True, metrics={"local_fd": 12.5}),
    ])


def _log_model_folder(name: str, tmp: Path) -> None:
    folder = tmp / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    mlflow.log_artifacts(str(folder), artifact_path=f"models/{name}")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A store like two `kedro run`s leave it: the LMs logged by an earlier (dp_training) run,
    the renderer and the released metrics by the run that builds the report."""
    root = tmp_path_factory.mktemp("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    experiment = mlflow.create_experiment("report-links",
                                          artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment, run_name="dp_training") as training:
        for name in ("summary_lm", "caption_lm"):
            _log_model_folder(name, root / "training")
    document = _document()
    with mlflow.start_run(experiment_id=experiment, run_name="evaluation") as evaluation:
        _log_model_folder("renderer_model", root / "rendering")
        released = report.mlflow_metrics(report.released_metrics(document))
        mlflow.log_metrics({f"{report.METRIC_PREFIX}.{k}": v["value"]
                            for k, v in released.items()})
        links = report.active_mlflow_links(UI)
        html = report.render_report(document, ledger(), synthetic_albums(n=5), public_corpus(),
                                    None, ReportConfig(n_gallery_albums=4, n_public_samples=6),
                                    links)
    yield {"html": html, "links": links, "training": training.info.run_id,
           "evaluation": evaluation.info.run_id, "experiment": experiment,
           "client": MlflowClient()}
    mlflow.set_tracking_uri(None)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")


def _hrefs(html: str) -> list[str]:
    parser = _Anchors()
    parser.feed(html)
    return parser.hrefs


def test_every_link_opens_a_run_artifact_or_metric_that_exists(tracked):
    client, hrefs = tracked["client"], _hrefs(tracked["html"])
    assert hrefs, "the report links nothing"
    for href in hrefs:
        match = LINK.match(href)
        assert match, f"not an MLflow UI run link: {href!r}"
        run = client.get_run(match["run"])  # raises when the run does not exist
        assert run.info.experiment_id == match["exp"] == tracked["experiment"]
        if match["artifact"]:
            parent = match["artifact"].rsplit("/", 1)[0]
            assert match["artifact"] in [a.path for a in client.list_artifacts(run.info.run_id,
                                                                               parent)], href
    # the models: the LMs in the run that trained them, the renderer in this one
    models = tracked["links"].models
    assert models["summary_lm"].run_id == models["caption_lm"].run_id == tracked["training"]
    assert models["renderer_model"].run_id == tracked["evaluation"]
    for name in report.RELEASED_MODELS:
        assert tracked["links"].model_url(name) in hrefs, name
    # each released finite metric links to the run that holds it, under its MLflow key
    logged = client.get_run(tracked["evaluation"]).data.metrics
    keys = re.findall(r"title='metric (eval\.[^']+)'", tracked["html"])
    assert sorted(keys) == sorted(k for k in logged if k != "eval.privacy.epsilon")
    assert "eval.caption_agreement.albums_consistent_90" not in keys  # NaN: never logged
    assert "not logged (not a finite number)" in tracked["html"]
    assert "local_fd" not in tracked["html"]  # internal: not in the released report


def test_no_run_no_links():
    html = report.render_report(_document(), ledger(), synthetic_albums(n=2), public_corpus(),
                                None, ReportConfig())
    assert _hrefs(html) == []
    assert "not built inside an MLflow run" in html


def _chromium(html_path: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}",
                           *args, html_path.as_uri()],
                          capture_output=True, text=True, timeout=180)


@needs_chromium
def test_report_renders_in_headless_chromium(tracked, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(tracked["html"], encoding="utf-8")
    dom = _chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    total = int(re.search(r'data-images-total="(\d+)"', dom.stdout).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom.stdout).group(1))
    assert total == 4 * 4 + 6 and loaded == total  # every album photo and public sample decoded
    headings = re.findall(r"<h2>(.*?)</h2>", dom.stdout)
    assert headings[:3] == ["Synthetic albums", "Public-corpus samples",
                            "Models and their MLflow runs"]  # the page opens with the gallery
    assert _hrefs(dom.stdout) == _hrefs(tracked["html"])  # every link survived, none is empty
    shot = tmp_path / "report.png"
    done = _chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert image.shape == (1600, 1280, 3)
    top = image[:800]  # the gallery's part of the page: photos, not a blank page
    assert top.std() > 20 and len(np.unique(top.reshape(-1, 3), axis=0)) > 200
