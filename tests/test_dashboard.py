"""The report's HTML dashboard: built from fixture records, its numbers checked against the records, and the page
loaded in headless Chromium (images render, tables present, no console errors)."""

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness import plots, records, report

GPU = "NVIDIA H100 80GB HBM3"
# decode tok/s per (method, batch size); perplexity per method.
DECODE = {"none": {1: 100.0, 4: 360.0, 16: 1200.0}, "fp8": {1: 150.0, 4: 540.0, 16: 2400.0},
          "gptq": {1: 180.0, 4: 400.0, 16: 900.0}}
PPL = {"none": 10.0, "fp8": 10.2, "gptq": 11.0}


def run_record(method, batch, ppl=None, status="ok", gpu=GPU):
    rec = records.new_record({"model": {"name_or_path": "tiny"}, "method": {"quant_method": method},
                              "bench": {"throughput": {"batch_size": batch}}})
    rec["status"], rec["method"] = status, {"quant_method": method}
    rec["env"]["gpu"] = gpu
    if status != "ok":
        rec["error"] = "OutOfMemoryError: CUDA out of memory <script>"
        return rec
    rec["metrics"]["throughput"] = {"batch_size": batch, "prompt_len": 128, "gen_len": 32,
                                    "prefill_tokens_per_s": 10 * DECODE[method][batch],
                                    "decode_tokens_per_s": DECODE[method][batch], "peak_memory_bytes": 2**20}
    if ppl is not None:
        rec["metrics"]["perplexity"] = {"perplexity": ppl, "dataset": "wiki", "seq_len": 64, "scored_tokens": 63}
    return rec


def kernel_record():
    rec = records.new_record({"models": ["llama-3-8b"]}, kind="kernels")
    rec["status"], rec["env"]["gpu"] = "ok", GPU
    rows = []
    for layer, (k, n) in {"qkv": (4096, 6144), "o": (4096, 4096)}.items():
        for m in (1, 16, 256):
            for backend, ms in (("cublas_bfloat16", 0.04 * m ** 0.5), ("triton_w4a16_g128", 0.02 * m ** 0.5)):
                rows.append({"model": "llama-3-8b", "layer": layer, "backend": backend, "K": k, "N": n, "M": m,
                             "status": "ok", "median_ms": ms, "roofline_fraction": 0.1 * m ** 0.25,
                             "hbm_fraction": 0.1, "gbps": 300.0, "tflops": 1.0})
    rec["metrics"] = {"rows": rows, "roofline": {"hbm_gbps": 2988.0, "bf16_tflops": 756.0, "fp8_tflops": 1337.0}}
    return rec


def write_fixture(directory, batches=(1, 4, 16)):
    for method in DECODE:
        for b in batches:
            records.write_record(run_record(method, b, ppl=PPL[method] if b == 1 else None), directory)
    records.write_record(run_record("awq", 1, status="failed"), directory)
    records.write_record(kernel_record(), directory)
    return directory


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    res = write_fixture(root / "res")
    assert report.main([str(res), "--out-dir", str(root / "reports")]) == 0
    return root / "reports"


def test_report_writes_markdown_html_and_one_png_per_plot(built):
    assert (built / "summary.md").read_text().startswith("# quantbench results")
    pngs = sorted(p.name for p in (built / "plots").glob("*.png"))
    assert [p.split("-")[0] for p in pngs] == ["batch", "kernels", "pareto", "ppl"]
    for p in (built / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (built / "index.html").read_text()
    for p in pngs:
        assert f'src="plots/{p}"' in page  # relative links: works from file:// and any static host
    assert "OutOfMemoryError" in page and "<script>" not in page  # failed run listed, its text escaped
    assert not list(built.rglob(".tmp-*"))


def test_pareto_front_keeps_only_undominated_points():
    speed = pd.Series([100.0, 150.0, 180.0, 120.0, 150.0])
    ppl = pd.Series([10.0, 10.2, 11.0, 10.5, 10.1])
    # 3 (slower and worse than 1) and 1 (same speed as 4, higher ppl) are dominated.
    assert plots.pareto_front(speed, ppl).tolist() == [True, False, True, False, True]


def test_batch_speedups_are_ratios_to_the_unquantized_run_at_the_same_batch(tmp_path):
    df = records.load_frame([write_fixture(tmp_path)])
    b = plots.batch_frame(df).set_index(["method", "batch"])
    for method, per_batch in DECODE.items():
        for batch, tok_s in per_batch.items():
            assert b.loc[(method, batch), "decode speedup"] == pytest.approx(tok_s / DECODE["none"][batch])
    figs, notes = plots.batch_figures(plots.batch_frame(df))
    assert len(figs) == 1 and not notes


def test_one_batch_size_skips_the_batch_plot_with_a_note(tmp_path):
    df = records.load_frame([write_fixture(tmp_path, batches=(1,))])
    figs, notes = plots.batch_figures(plots.batch_frame(df))
    assert figs == [] and "one batch size only" in notes[0]


def test_kernel_speedup_is_vs_cublas_on_the_same_shape_and_m():
    k = plots.kernel_frame([kernel_record()])
    w4 = k[k["backend"] == "triton_w4a16_g128"]
    assert len(w4) == 6 and w4["speedup"].tolist() == pytest.approx([2.0] * 6)
    assert k[k["backend"] == "cublas_bfloat16"]["speedup"].tolist() == pytest.approx([1.0] * 6)


def test_rebuild_removes_plots_the_records_no_longer_make(tmp_path):
    res = write_fixture(tmp_path / "res")
    out = tmp_path / "reports"
    assert report.main([str(res), "--out-dir", str(out)]) == 0
    assert len(list((out / "plots").glob("batch-*.png"))) == 1
    shutil.rmtree(res)
    write_fixture(tmp_path / "res", batches=(1,))
    assert report.main([str(res), "--out-dir", str(out)]) == 0
    assert not list((out / "plots").glob("batch-*.png"))
    assert "one batch size only" in (out / "index.html").read_text()


def test_out_puts_the_dashboard_next_to_the_summary(tmp_path):
    res = write_fixture(tmp_path / "res", batches=(1,))
    assert report.main([str(res), "--out", str(tmp_path / "x" / "s.md")]) == 0
    assert (tmp_path / "x" / "s.md").exists() and (tmp_path / "x" / "index.html").exists()


# --- headless Chromium -------------------------------------------------------------------------------------------

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver (Debian/Ubuntu)"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [p for p in CHROMIUM if not Path(p).exists()]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the dashboard in Chromium but {missing} are missing: {INSTALL}")
        pytest.skip(f"headless Chromium not installed ({missing}); {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMIUM[1]), options=opts)
    yield driver
    driver.quit()


def load(driver, page: Path) -> list[dict]:
    """Open the page from file:// and return the console messages it logged (SEVERE = errors)."""
    driver.get_log("browser")  # drop earlier pages' messages
    driver.get(page.resolve().as_uri())
    driver.execute_script("return document.readyState")
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def images(driver) -> list[tuple[str, int]]:
    return driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0])")


def test_dashboard_renders_in_headless_chromium(built, browser, tmp_path):
    errors = load(browser, built / "index.html")
    assert browser.title == "quantbench results"
    imgs = images(browser)
    assert len(imgs) == len(list((built / "plots").glob("*.png"))) == 4
    assert all(width > 0 for _, width in imgs), imgs
    tables = browser.execute_script("return document.querySelectorAll('table.data').length")
    assert tables >= 5  # results, speedup by batch, kernel speedups, rooflines, failed runs, environments
    assert errors == []

    # The checks above can fail: a page with a missing plot shows a 0-width image and a console error.
    shutil.copytree(built, tmp_path / "broken")
    next((tmp_path / "broken" / "plots").glob("pareto-*.png")).unlink()
    errors = load(browser, tmp_path / "broken" / "index.html")
    assert sorted(w for _, w in images(browser))[0] == 0
    assert errors and "pareto" in errors[0]["message"]


def test_the_dashboard_names_the_w4a16_kernel_each_point_ran():
    import pandas as pd

    from harness import dashboard

    assert dashboard.kernel_label({"path": "gluon", "consumers": 2, "block_m": 128}) == "gluon x2 128 tokens"
    assert dashboard.kernel_label({"path": "frag", "block_m": 128, "block_n": 128, "split_k": 4}) == \
        "frag 128x128 split 4"
    assert dashboard.kernel_label({"path": "dequant", "block_n": 128}) == "dequant"
    rows = pd.DataFrame([
        {"gpu": "H100", "model": "m", "layer": "o", "backend": "triton_w4a16_g128", "M": 128,
         "kernel": {"path": "gluon", "consumers": 1}},
        {"gpu": "H100", "model": "m", "layer": "o", "backend": "triton_w4a16_g128", "M": 1024,
         "kernel": {"path": "dequant"}},
        {"gpu": "H100", "model": "m", "layer": "o", "backend": "cublas_bfloat16", "M": 128, "kernel": float("nan")}])
    table = dashboard.kernel_choices(rows)
    assert table.loc[("H100", "m", "o", "triton_w4a16_g128")].tolist() == ["gluon x1", "dequant"]
    assert len(table) == 1  # rows without a recorded kernel (peers, older records) are left out
    assert dashboard.kernel_choices(rows.drop(columns="kernel")).empty
