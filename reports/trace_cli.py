"""``gaibao trace``, ``gaibao archive get`` and ``gaibao rules show`` (registered by gaibao.cli).

Quick commands: no Prefect, no Great Expectations; they read the warehouse and the archive and
write nothing to either.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Annotated

import typer

archive_app = typer.Typer(
    help="The raw archive: every file a county sent, byte for byte.", no_args_is_help=True
)


def _warehouse():  # noqa: ANN202 - a Warehouse; imported lazily
    from gaibao.settings import get_settings
    from warehouse.store import Warehouse

    settings = get_settings()
    # read only: no journal repair (a trace must never change the warehouse)
    return Warehouse(str(settings.warehouse_url), settings.home, recover=False, settings=settings)


def trace(
    area: Annotated[str, typer.Argument(help="县区、市或“全省”：名称或区划代码，如 太和县、341200、全省")],
    measure: Annotated[
        str, typer.Argument(help="指标，与会议材料中的写法相同，如 面积完成率、竣工面积、乡村教师支持计划")
    ],
    period: Annotated[str, typer.Option("--period", "-p", help="报告期 YYYY-MM")],
    out: Annotated[
        Path | None, typer.Option("--out", help="明细行CSV（默认 $GAIBAO_HOME/reports/trace/…csv）")
    ] = None,
) -> None:
    """追溯会议材料中的一个数：数值、来源文件（原文件名、收到时间、sha256、规则版本）和计入的明细行。"""
    from gaibao.settings import get_settings
    from reports.pack import safe_name
    from reports.trace import TraceError, format_trace, trace_figure, write_rows_csv

    wh = _warehouse()
    try:
        result = trace_figure(wh.engine, period, area, measure)
    except TraceError as exc:
        typer.echo(f"错误：{exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        wh.close()
    path = out or (
        get_settings().reports_dir
        / "trace"
        / f"{period}_{safe_name(result.area.code)}_{safe_name(result.measure.key)}.csv"
    )
    n = write_rows_csv(result, path)
    typer.echo(format_trace(result, path, n))
    if not result.agrees:
        raise typer.Exit(1)


_SHA = re.compile(r"^[0-9a-f]{64}$")
_SID = re.compile(r"^[0-9a-f]{20}$")


@archive_app.command("get")
def archive_get(
    key: Annotated[str, typer.Argument(help="文件的 sha256，或 submission_id")],
    out: Annotated[Path, typer.Option("--out", help="写到这个文件（已存在则不覆盖，除非 --force）")],
    force: Annotated[bool, typer.Option("--force", help="覆盖已存在的文件")] = False,
) -> None:
    """取回县区报送的原文件，逐字节与报送时相同（按 sha256 校验）。"""
    import sqlalchemy as sa

    from warehouse.archive import ArchiveCorrupt

    key = key.strip().lower()
    if not (_SHA.match(key) or _SID.match(key)):
        typer.echo("错误：请给出64位的 sha256 或20位的 submission_id（十六进制）", err=True)
        raise typer.Exit(2)
    wh = _warehouse()
    try:
        with wh.engine.connect() as conn:
            column = "sha256" if _SHA.match(key) else "submission_id"
            rows = conn.execute(
                sa.text(
                    "SELECT submission_id, kind, county_code, period, file_name, sha256, received_at, status"
                    f" FROM submission WHERE {column} = :k ORDER BY received_at"
                ),
                {"k": key},
            ).all()
        sha = rows[0].sha256 if rows else (key if _SHA.match(key) else None)
        if sha is None:
            typer.echo(f"错误：数据仓库中没有 submission_id 为 {key} 的报送", err=True)
            raise typer.Exit(2)
        try:
            content = wh.archive.get(sha)
        except FileNotFoundError:
            typer.echo(f"错误：归档中没有 sha256 为 {sha} 的文件（{wh.archive.location}）", err=True)
            raise typer.Exit(2) from None
        except ArchiveCorrupt as exc:
            typer.echo(f"错误：归档文件已损坏，未写出：{exc}", err=True)
            raise typer.Exit(1) from exc
    finally:
        wh.close()
    if out.exists() and not force:
        typer.echo(f"错误：{out} 已存在（用 --force 覆盖）", err=True)
        raise typer.Exit(2)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    os.replace(tmp, out)
    typer.echo(f"{out}：{len(content):,} 字节，sha256 {sha}（已校验）")
    for r in rows:
        typer.echo(
            f"  {r.submission_id}  {r.county_code}  {r.period}  {r.kind}  {r.status}  原文件名 {r.file_name}"
        )


def rules_show(
    version: Annotated[str | None, typer.Argument(help="规则版本（12位），不给则列出用过的所有版本")] = None,
    file: Annotated[str | None, typer.Option("--file", help="只打印这一个规则文件，如 progress.json")] = None,
) -> None:
    """打印一个规则版本的规则全文（数据仓库中保存的，与当时校验所用的逐字节相同）。"""
    from reports.plaintext import text_table
    from warehouse.rules import RulesMismatch, rules_text, versions_used

    wh = _warehouse()
    try:
        if version is None:
            table = [[("规则版本", False), ("报送数", True), ("报告期", False), ("规则全文", False)]]
            for v, n, first, last, stored in versions_used(wh.engine):
                span = first if first == last else f"{first}..{last}"
                table.append(
                    [(v, False), (f"{n:,}", True), (span, False), ("已保存" if stored else "未保存", False)]
                )
            typer.echo(text_table(table, header_rows=1))
            return
        try:
            text = rules_text(wh.engine, version.strip())
        except RulesMismatch as exc:
            typer.echo(f"错误：{exc}", err=True)
            raise typer.Exit(1) from exc
    finally:
        wh.close()
    if text is None:
        typer.echo(
            f"错误：数据仓库中没有规则版本 {version} 的全文（没有一次运行用它校验过，"
            "或它在保存规则全文之前就已使用）。gaibao rules show 列出所有版本",
            err=True,
        )
        raise typer.Exit(2)
    files = [f for f in text.files if file is None or f.file_name == file]
    if not files:
        typer.echo(
            f"错误：规则版本 {version} 没有文件 {file}（有：{'、'.join(f.file_name for f in text.files)}）",
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(
        f"规则版本 {text.rules_version}：{len(text.files)}个规则文件，"
        f"记录于 {text.recorded_at:%Y-%m-%d %H:%M} UTC，用它校验的报送 {text.submissions:,} 份（全文已按 sha256 校验）"
    )
    for f in files:
        typer.echo(f"\n===== {f.file_name}  sha256 {f.sha256} =====")
        typer.echo(f.content.rstrip("\n"))
