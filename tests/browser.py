"""report.html as a person sees it: opened in Debian's headless Chromium through its
chromedriver (`make test` installs both), screenshotted, and its plotted points checked
against report.json."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from quantmill.report_html import plot_points


def check_report_html(out_dir: Path) -> None:
    """Open out_dir/report.html in headless Chromium; assert the Pareto plot is drawn (not
    blank), that its points are report.json's attempts, and that they sit where their
    speed and drop put them."""
    from matplotlib.image import imread
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    report = json.loads((out_dir / "report.json").read_text())
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "Debian's chromium and chromium-driver are needed (`make browser` installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    with tempfile.TemporaryDirectory(prefix="quantmill-chromium-") as profile:
        # Without the background-networking flags Chromium keeps dialling out of this closed network.
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", "--window-size=1280,1600"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        try:
            driver.get((out_dir / "report.html").as_uri())
            assert driver.find_element(By.CSS_SELECTOR, ".gate").text == f"gate: {report['gate']['status'].upper()}"
            points = json.loads(driver.find_element(By.ID, "quantmill-points").get_attribute("textContent"))
            drawn = driver.execute_script(
                "return Array.from(document.querySelectorAll('g[id^=\"point-\"]')).map(g => {"
                "const r = g.getBoundingClientRect(); return [g.id, r.x + r.width / 2, r.y + r.height / 2, r.width];})"
            )
            plot = driver.find_element(By.TAG_NAME, "svg").screenshot_as_png
        finally:
            driver.quit()

    assert points == plot_points(report)
    for point, attempt in zip(points, itertools.cycle(report["attempts"])):
        assert (point["attempt"], point["drop"], point["size_mb"]) == (
            attempt["index"], attempt["accuracy_drop"], attempt["size_bytes"] / 1e6)
    timed = {f"point-{p['attempt']}-{p['target']}": p for p in points if p["speedup"] is not None}
    at = {name: (x, y) for name, x, y, width in drawn if width > 0}
    assert set(at) == set(timed), "one drawn point per attempt and measured target"
    for (a, pa), (b, pb) in itertools.combinations(timed.items(), 2):
        if abs(pa["speedup"] - pb["speedup"]) > 0.05 * _span(timed, "speedup"):
            assert (at[a][0] < at[b][0]) == (pa["speedup"] < pb["speedup"]), f"{a} and {b} are drawn in the wrong order by speed"
        if abs(pa["drop"] - pb["drop"]) > 0.05 * _span(timed, "drop"):
            assert (at[a][1] > at[b][1]) == (pa["drop"] < pb["drop"]), f"{a} and {b} are drawn in the wrong order by drop"

    pixels = imread(io.BytesIO(plot))[..., :3]
    inked = np.mean(pixels.min(axis=-1) < 0.9)
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert inked > 0.02 and colours > 16, f"the plot looks blank: {inked:.1%} of pixels inked, {colours} colours"


def _span(points: dict, key: str) -> float:
    values = [p[key] for p in points.values()]
    return max(values) - min(values) or 1.0
