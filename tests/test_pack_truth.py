"""The pack says what is true: the score footnote, the lagging-county rule, the rural teacher
subsidy, the receipt's text part, and tables that fit an A4 portrait page."""

from __future__ import annotations

import email
import email.policy
import html as html_lib
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from rich.cells import cell_len

from gaibao.settings import Settings
from reports.config import ScoreWeights, Thresholds, load_recipients
from reports.delivery import send_receipts
from reports.exceptions import county_behind
from reports.mail import SmtpSender
from reports.pack import build_pack, compute_pack, score_note_zh
from reports.plaintext import plain_text, text_table
from reports.sample import load_into_warehouse, sample_inputs
from warehouse.store import Warehouse

P = "2018-06"
A4_PX = 794  # an A4 page's width at 96 dpi

WEIGHTS = ScoreWeights(
    weights={
        "area_completion": 50.0,
        "equipment_completion": 20.0,
        "start_rate": 0.0,
        "timeliness": 15.0,
        "data_quality": 7.5,
        "overdue_stalled": 7.5,
    },
    late_fraction=0.25,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("truthhome")
    wh = Warehouse(f"sqlite:///{home / 'warehouse.db'}", home)
    wh.upgrade()
    inputs = sample_inputs(P)
    load_into_warehouse(wh, inputs)
    result = build_pack(wh.engine, P, home / "reports" / P, Thresholds(), WEIGHTS, letters=False)
    yield wh, inputs, result, home
    wh.close()


# -- the score footnote ------------------------------------------------------------------------


def test_score_footnote_is_written_from_the_weights_in_force(built) -> None:
    _, inputs, result, _ = built
    note = score_note_zh(WEIGHTS)
    assert note.startswith(
        "得分满分100分：面积完成50、设备完成20、报送及时15、数据质量7.5、逾期停滞项目7.5。"
    )
    assert "按25%计" in note and "开工率不计分" in note
    html = result.files["html"].read_text(encoding="utf-8")
    assert note in html
    assert "面积完成35" not in html  # the default weights' words are not in a pack that used others
    data = compute_pack(inputs, Thresholds(), WEIGHTS)
    assert data.county_table.note_zh == note
    # the points in the table add up to the weights the note states
    points = data.scorecard[[c for c in data.scorecard.columns if c.startswith("points_")]]
    assert (points.max() <= pd.Series({f"points_{k}": v for k, v in WEIGHTS.weights.items()}) + 1e-9).all()
    default = score_note_zh(ScoreWeights())
    assert default.startswith(
        "得分满分100分：面积完成35、设备完成25、开工率10、报送及时10、数据质量10、逾期停滞项目10。"
    )


# -- the lagging-county rule -----------------------------------------------------------------


def _counties(
    rates: list[tuple[float, float]], city_of=lambda i: "340300"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [
        {
            "period": P,
            "county_code": f"3403{i:02d}",
            "city_code": city_of(i),
            "area_completion_rate": area,
            "equipment_completion_rate": eq,
        }
        for i, (area, eq) in enumerate(rates)
    ]
    return pd.DataFrame(rows), pd.DataFrame(columns=["period", "level", "city_code"])


# the demo's 15 counties' 2018-12 area completion rates: five are past their plan
DEMO_RATES = [1.171, 1.141, 1.02, 1.12, 1.11, 1.08, 1.059, 1.008, 0.97, 0.95, 0.93, 0.91, 0.86, 0.79, 0.68]


def test_bottom_n_never_lists_a_county_at_or_above_its_plan() -> None:
    counties, cities = _counties([(a, 0.99) for a in DEMO_RATES], city_of=lambda i: f"34{i:02d}00")
    out = county_behind(counties, cities, P, Thresholds(bottom_n=10, behind_city_points=10))
    flagged = counties.set_index("county_code").loc[out["county_code"], "area_completion_rate"]
    assert (flagged < 1.0).all() and len(out) == sum(r < 1.0 for r in DEMO_RATES)
    assert all("全省15个县区中倒数第" in d for d in out["detail"])


@pytest.mark.parametrize(
    ("n_counties", "bottom_n", "ranked"),
    [(10, 10, False), (11, 10, True), (5, 10, False), (6, 5, True)],
)
def test_bottom_n_only_in_a_province_with_more_than_n_counties(
    n_counties: int, bottom_n: int, ranked: bool
) -> None:
    rates = [(0.5 + i / 100, 0.99) for i in range(n_counties)]
    counties, cities = _counties(rates, city_of=lambda i: f"34{i:02d}00")  # each its own city: no gap
    out = county_behind(counties, cities, P, Thresholds(bottom_n=bottom_n))
    assert (len(out) == min(bottom_n, n_counties)) if ranked else out.empty


@pytest.mark.parametrize(
    ("area", "eq", "listed"),
    [
        (1.00, 1.00, False),  # at plan: not behind however far below a city at 125%
        (1.059, 1.10, False),
        (0.999, 1.00, True),  # area lags; equipment at plan gives no reason of its own
        (1.00, 0.99, True),  # equipment lags; area at plan gives no reason of its own
    ],
)
def test_city_gap_never_lists_a_measure_at_or_above_plan(area: float, eq: float, listed: bool) -> None:
    counties = pd.DataFrame(
        [
            {
                "period": P,
                "county_code": "340321",
                "city_code": "340300",
                "area_completion_rate": area,
                "equipment_completion_rate": eq,
            },
        ]
    )
    cities = pd.DataFrame(
        [
            {
                "period": P,
                "level": "city",
                "city_code": "340300",
                "area_completion_rate": 1.25,
                "equipment_completion_rate": 1.25,
            }
        ]
    )
    out = county_behind(counties, cities, P, Thresholds(bottom_n=0, behind_city_points=10))
    assert (len(out) == 1) is listed
    if listed:
        detail = out["detail"].iloc[0]
        assert ("设备购置完成率" in detail) is (eq < 1.0) and ("校舍改造面积完成率" in detail) is (area < 1.0)


def test_the_lagging_section_states_its_thresholds(built) -> None:
    _, inputs, _, _ = built
    th = Thresholds(behind_city_points=7.5, bottom_n=3)
    data = compute_pack(inputs, th, ScoreWeights())
    section = next(s for s in data.exception_sections if s.key == "exc_COUNTY_BEHIND")
    assert "低于所在市7.5个百分点以上" in section.note_zh
    assert "全省县区多于3个时，面积完成率居全省后3名" in section.note_zh
    assert "达到或超过五年规划（100%）的，不因该项列入" in section.note_zh


# -- the rural teacher subsidy ---------------------------------------------------------------


def test_funding_section_shows_the_rural_teacher_subsidy(built) -> None:
    _, inputs, result, _ = built
    expected = inputs.county_funding.loc[inputs.county_funding["period"] == P, "rural_teacher_subsidy_wan"]
    assert expected.notna().all() and len(expected)
    wb = openpyxl.load_workbook(result.files["xlsx"])
    for sheet in ("资金与师资", "资金与师资（县区）"):
        ws = wb[sheet]
        header = next(
            r for r in ws.iter_rows(values_only=True) if r and "乡村教师支持计划年度拨付（万元）" in r
        )
        col = header.index("乡村教师支持计划年度拨付（万元）")
        name = header.index("地区")
        values = {
            r[name]: r[col] for r in ws.iter_rows(values_only=True) if r and isinstance(r[col], int | float)
        }
        if sheet == "资金与师资":
            assert values["全省"] == pytest.approx(float(expected.sum()))
        else:
            assert sum(values.values()) == pytest.approx(float(expected.sum()))
    html = result.files["html"].read_text(encoding="utf-8")
    assert "乡村教师支持计划" in html and f"{expected.sum() / 1e4:,.2f}亿元/年" in html


# -- the receipt's text part -----------------------------------------------------------------


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd's signature
        self.messages.append(bytes(envelope.original_content or envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _columns_of(header: str, rule: str) -> list[int]:
    """The display column where each field starts, from the ``----  ---`` rule under a header."""
    starts, col = [], 0
    for m in re.finditer(r"-+", rule):
        starts.append(cell_len(rule[: m.start()]))
        col = m.end()
    assert col == len(rule)
    return starts


def _fields(line: str, starts: list[int]) -> list[str]:
    """Cut ``line`` at display columns ``starts`` (a CJK character is two columns)."""
    pos, cells, cur = 0, [], ""
    bounds = [*starts[1:], 10**6]
    j = 0
    for ch in line:
        if pos >= bounds[j]:
            cells.append(cur)
            cur, j = "", j + 1
        cur += ch
        pos += cell_len(ch)
    cells.append(cur)
    return [c.strip() for c in cells]


def test_receipt_text_part_reads_as_a_table_over_real_smtp(built, tmp_path: Path) -> None:
    wh, inputs, _, home = built
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        settings = Settings(home=home, warehouse_url=wh.url, mail_from="改薄办 <gaibao@example.org>")
        sender = SmtpSender("127.0.0.1", controller.port, attempts=1)
        report = send_receipts(P, wh, settings, sender=sender, recipients=load_recipients(None), resend=True)
    finally:
        controller.stop()
    assert report.failed == [] and len(inbox.messages) == len(report.sent) > 0
    subs = inputs.submissions[inputs.submissions["period"] == P]
    checked = 0
    for raw in inbox.messages:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = msg.get_body(("plain",)).get_content()
        lines = text.splitlines()
        i = next(k for k, line in enumerate(lines) if line.startswith("报表") and "收到时间" in line)
        header, rule = lines[i], lines[i + 1]
        starts = _columns_of(header, rule)
        names = _fields(header, starts)
        assert names == [
            "报表",
            "文件",
            "收到时间",
            "处理结果",
            "退回原因",
            "数据行",
            "接收行",
            "拒收行",
            "是否逾期",
        ]
        body = []
        for line in lines[i + 2 :]:
            if not line.strip():
                break
            body.append(_fields(line, starts))
        files = {r[1] for r in body if r[1]}
        county = subs[subs["file_name"].isin(files)]
        assert len(county) and county["county_code"].nunique() == 1
        for row in body:
            if not row[0]:
                continue  # a continuation line of a wrapped cell
            sub = county[county["file_name"] == row[1]].iloc[0]
            assert row[5] == f"{int(sub['rows_total']):,}" and row[7] == f"{int(sub['rows_rejected']):,}"
            assert row[3] in ("已接收", "已退回", "已被新文件替换")
            checked += 1
        # the HTML part says the same
        assert "收到时间" in msg.get_body(("html",)).get_content()
    assert checked >= len(report.sent)


def test_text_table_aligns_cjk_and_wraps_long_cells() -> None:
    rows = [
        [("县区", False), ("行数", False), ("说明", False)],
        [("太和县", False), ("1,234", True), ("短", False)],
        [("ab", False), ("7", True), ("很长的说明" * 20, False)],
    ]
    out = text_table(rows, header_rows=1).splitlines()
    starts = _columns_of(out[0], out[1])
    assert [cell_len(line[: len(line)]) >= starts[-1] for line in out[2:4]] == [True, True]
    # the numbers end in the same display column
    ends = [cell_len(_fields(line, starts)[0]) for line in out[2:4]]
    assert ends == [6, 2]
    assert [_fields(line, starts)[1] for line in out[2:4]] == ["1,234", "7"]
    assert (
        cell_len(out[2].split("  ")[0]) == cell_len(out[3].split("  ")[0]) + 4
    )  # padded by width, not chars
    assert len(out) > 4 and all(cell_len(line) <= starts[-1] + 60 for line in out)  # wrapped
    assert "".join(_fields(line, starts)[2] for line in out[3:]) == "很长的说明" * 20


def test_plain_text_keeps_paragraphs_and_escapes_nothing_into_markup() -> None:
    html = "<h1>标题</h1><p>第一段 &lt;b&gt;</p><table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>二</td></tr></table>"
    text = plain_text(html)
    assert text.splitlines()[:3] == ["标题", "第一段 <b>", ""] and "a  b" in text and "1  二" in text


# -- A4 portrait ---------------------------------------------------------------------------------

_OVERFLOW_SCRIPT = """<script>
window.addEventListener('load', () => {
  const vw = document.documentElement.clientWidth;
  const tables = [];
  document.querySelectorAll('table').forEach((t) => {
    const box = t.parentElement.tagName === 'DIV' ? t.parentElement : t;
    let heading = box.previousElementSibling;
    while (heading && heading.tagName !== 'H2') heading = heading.previousElementSibling;
    const r = t.getBoundingClientRect();
    tables.push({heading: heading ? heading.textContent : '', right: r.right, width: t.scrollWidth,
                 room: t.parentElement.clientWidth});
  });
  const out = document.createElement('pre');
  out.id = 'overflow-result';
  out.textContent = JSON.stringify({vw: vw, doc: document.documentElement.scrollWidth, tables: tables});
  document.body.appendChild(out);
});
</script>"""


def layout_at_width(chromium: str, page: Path, tmp_path: Path, width: int = A4_PX) -> dict:
    """Lay ``page`` out in headless Chromium at ``width`` px: each table's width and its room."""
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", _OVERFLOW_SCRIPT + "</body>"), encoding="utf-8"
    )
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={width},1123",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="overflow-result">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(html_lib.unescape(found.group(1)))


@pytest.fixture(scope="session")
def chromium() -> str:
    path = "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.skip("chromium is not installed (scripts/install_system_deps.sh --all installs Debian's)")
    return path


def assert_fits(layout: dict, width: int = A4_PX) -> None:
    assert layout["vw"] <= width and layout["doc"] <= layout["vw"], layout
    over = [t for t in layout["tables"] if t["width"] > t["room"] + 0.5 or t["right"] > layout["vw"] + 0.5]
    assert over == [], over


def test_ranking_table_fits_an_a4_portrait_page(built, chromium: str, tmp_path: Path) -> None:
    _, _, result, _ = built
    layout = layout_at_width(chromium, result.files["html"], tmp_path)
    headings = [t["heading"] for t in layout["tables"]]
    assert "各县区完成率、得分与排名" in headings and "各县区得分构成（分）" in headings
    assert_fits(layout)
