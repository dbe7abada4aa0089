"""Browser tests: Debian's Chromium (``/usr/bin/chromium``) driven by Playwright against the real
portal (``gaibao serve``, a uvicorn process) on loopback, over a real warehouse (SQLite).

Every page visited is written as a full-page screenshot (``GAIBAO_SCREENSHOTS`` names the folder,
default a temporary one) and checked for rendered Chinese: the page's heading is Chinese text and
has ink in its screenshot, and two different characters set in the page's font give two different
images (missing CJK glyphs would draw the same empty box for both). Playwright never downloads a
browser here: it launches the system Chromium by its path.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from portal_helpers import COUNTY_A, COUNTY_B, PASSWORD
from wall_helpers import PERIOD, build_wall_warehouse

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CJK = re.compile(r"[\u4e00-\u9fff]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The real portal on a loopback port over a freshly built warehouse; yields (base URL, shots dir)."""
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium (scripts/install_system_deps.sh installs it)")
    pytest.importorskip("playwright.sync_api")
    from gaibao.settings import get_settings

    home = tmp_path_factory.mktemp("browser") / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'warehouse.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAIBAO_HOME", str(home))
        mp.setenv("GAIBAO_WAREHOUSE_URL", url)
        mp.delenv("GAIBAO_SOURCES", raising=False)
        get_settings.cache_clear()
        wh, _, _ = build_wall_warehouse(home)
        wh.close()
    get_settings.cache_clear()
    port = _free_port()
    env = {**os.environ, "GAIBAO_HOME": str(home), "GAIBAO_WAREHOUSE_URL": url}
    env.pop("GAIBAO_SOURCES", None)
    gaibao = Path(sys.executable).with_name("gaibao")
    proc = subprocess.Popen(
        [str(gaibao), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gaibao serve did not start: {proc.stderr.read()[-3000:] if proc.poll() is not None else 'timeout'}")
            time.sleep(0.3)
        shots = Path(os.environ.get("GAIBAO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
        shots.mkdir(parents=True, exist_ok=True)
        yield base, shots
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def _ink(png: bytes) -> int:
    """Pixels clearly darker than the page background in a screenshot."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("L")
    return sum(1 for v in img.getdata() if v < 128)


def shoot(page, shots: Path, name: str) -> str:
    """Write the page's screenshot and check that its Chinese text is really drawn; returns the text."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000, path
    heading = page.locator("h1").first
    text = heading.inner_text()
    assert CJK.search(text), (name, text)
    assert _ink(heading.screenshot()) > 200, f"{name}: the heading {text!r} has no ink"
    glyphs = page.evaluate(
        """() => {
            const box = document.createElement('div');
            box.id = 'cjk-probe';
            box.style.cssText = 'position:fixed;left:0;top:0;background:#fff;z-index:99999;font-size:48px;line-height:60px';
            box.innerHTML = '<span id="g1">挂</span><span id="g2">图</span>';
            document.body.appendChild(box);
            return getComputedStyle(box).fontFamily;
        }"""
    )
    one, two = page.locator("#g1").screenshot(), page.locator("#g2").screenshot()
    page.evaluate("() => document.getElementById('cjk-probe').remove()")
    assert _ink(one) > 50 and _ink(two) > 50, f"{name}: CJK probe drew nothing in {glyphs}"
    assert one != two, f"{name}: two different characters drew the same glyph (missing CJK font) in {glyphs}"
    return page.inner_text("body")


def _login(browser, base: str, username: str):
    ctx = browser.new_context(viewport={"width": 1200, "height": 900}, locale="zh-CN")
    page = ctx.new_page()
    page.goto(base + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    return ctx, page


def test_landing_and_login_pages_render_chinese(server, browser) -> None:
    base, shots = server
    ctx = browser.new_context(locale="zh-CN")
    page = ctx.new_page()
    page.goto(base + "/")
    text = shoot(page, shots, "01-landing")
    assert "全面改薄信息平台" in text and "专栏公开" in text
    page.click("text=登录平台")
    assert page.url.endswith("/login")
    shoot(page, shots, "02-login")
    ctx.close()


def test_province_member_sees_the_wall_chart_map_county_page_and_pack(server, browser) -> None:
    base, shots = server
    ctx, page = _login(browser, base, "prov")
    assert page.url.endswith("/wallchart")
    text = shoot(page, shots, "03-wallchart-province")
    assert "挂图作战" in text and "蚌埠市" in text and "阜阳市" in text and "太和县" in text
    assert page.locator("svg.countymap path").count() == 3
    assert page.locator("a[href*='/wallchart/pack/']").count() >= 3
    page.click("a[href^='/wallchart/city/341200']")
    assert "/wallchart/city/341200" in page.url
    text = shoot(page, shots, "04-wallchart-city-fuyang")
    assert "太和县" in text and "怀远县" not in text
    page.goto(base + f"/county/{COUNTY_A}")
    text = shoot(page, shots, "05-county-page")
    assert "项目台账" in text and "HY-2018-001" in text and "逐月进展" in text
    page.goto(base + "/wallchart")
    with page.expect_download() as dl:
        page.click(f"a[href='/wallchart/pack/{PERIOD}/xlsx']")
    assert dl.value.suggested_filename.endswith(".xlsx")
    ctx.close()


def test_city_officer_sees_only_the_wall_chart_of_their_city(server, browser) -> None:
    base, shots = server
    ctx, page = _login(browser, base, "city_a")
    text = shoot(page, shots, "06-wallchart-city-officer")
    assert "蚌埠市" in text and "怀远县" in text and "五河县" in text
    assert "阜阳市" not in text and "太和县" not in text and "TH-2018" not in text
    assert page.locator("svg.countymap path").count() == 2
    response = page.goto(base + f"/county/{COUNTY_B}")
    assert response.status == 403
    text = shoot(page, shots, "07-city-officer-refused")
    assert "无权" in text and "太和县" not in text
    ctx.close()


def test_clerk_sees_their_own_county_page_only(server, browser) -> None:
    base, shots = server
    ctx, page = _login(browser, base, "clerk_a")
    shoot(page, shots, "08-clerk-home")
    page.click(f"a[href='/county/{COUNTY_A}']")
    text = shoot(page, shots, "09-clerk-county-page")
    assert "怀远县" in text and "太和县" not in text and "五河县" not in text
    assert page.goto(base + "/wallchart").status == 403
    ctx.close()


def test_public_column_searches_and_shows_no_personal_data(server, browser) -> None:
    base, shots = server
    ctx = browser.new_context(viewport={"width": 1200, "height": 900}, locale="zh-CN")
    page = ctx.new_page()
    page.goto(base + "/public")
    text = shoot(page, shots, "10-public-index")
    assert "专栏公开" in text and "太和县" in text
    page.fill("input[name=county]", "太和")
    page.click("form.search button[type=submit]")
    page.wait_for_load_state("networkidle")
    text = shoot(page, shots, "11-public-county")
    assert "TH-2018-001" in text and "HY-2018" not in text
    assert '<script>alert("x")</script>太和县第9小学' in text  # shown as text, never run
    assert "张三" not in text and "0552-1234567" not in text
    html = page.content()
    assert "张三" not in html and "0552-1234567" not in html
    page.fill("input[name=county]", "")
    page.fill("input[name=school]", "怀远县第3")
    page.click("form.search button[type=submit]")
    page.wait_for_load_state("networkidle")
    text = shoot(page, shots, "12-public-school")
    assert "HY-2018-003" in text and "HY-2018-001" not in text
    ctx.close()
