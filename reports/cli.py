"""``gaibao pack``: the typer command (registered on the main app by gaibao.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

EXIT_BAD_OPTION = 3  # as gaibao.cli: an option refused before anything runs


def _checked_period(period: str | None) -> None:
    """Refuse a malformed ``--period`` in one line (Chinese / English), exit 3, before any work."""
    from gaibao.options import OptionError, check_period

    if period is None:
        return
    try:
        check_period(period)
    except OptionError as exc:
        typer.echo(f"错误：{exc}", err=True)
        raise typer.Exit(EXIT_BAD_OPTION) from None


def pack(
    period: Annotated[str | None, typer.Option("--period", help="报告期 YYYY-MM（默认上个月）")] = None,
    send: Annotated[
        bool, typer.Option("--send", help="发送：联席会议成员收到全套材料，各县区只收到本县区核查通知")
    ] = False,
    resend: Annotated[bool, typer.Option("--resend", help="已发送过的也重新发送（含 --send）")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="输出目录（默认 $GAIBAO_HOME/reports/<period>/）")
    ] = None,
) -> None:
    """生成月度联席会议材料（可选发送）。Build the monthly joint-meeting pack (optionally send it)."""
    from reports.service import run_pack

    _checked_period(period)
    try:
        result = run_pack(period=period, send=send, resend=resend, out=out)
    except ValueError as exc:
        typer.echo(f"错误：{exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"材料已生成：{result['out_dir']}")
    for name, path in result["files"].items():
        typer.echo(f"  {name}: {path}")
    typer.echo(f"  县区核查通知：{result['letters']}份（{result['out_dir']}/letters/）")
    if result["changes"]:
        typer.echo("与本期上次生成的材料相比：")
        for line in result["changes"]:
            typer.echo(f"  - {line}")
    if "delivery" in result:
        d = result["delivery"]
        typer.echo(f"发送：{d['sent']}封，跳过（已发送）{d['skipped']}封，失败{d['failed']}封")
        for path in result["messages"]:
            typer.echo(f"  {path}")
        for f in result["failed"]:
            typer.echo(f"  失败：{f['recipient']}：{f['error']}", err=True)
        if result["failed"]:
            raise typer.Exit(1)
    typer.echo(
        json.dumps(
            {"pack_digest": result["pack_digest"], "exceptions": result["exceptions"]}, ensure_ascii=False
        )
    )


def send_receipts_command(
    period: Annotated[str, typer.Option("--period", help="报告期 YYYY-MM")],
    resend: Annotated[bool, typer.Option("--resend", help="已发送过的也重新发送")] = False,
) -> None:
    """给本期报送的各县区发送回执。Send each county that submitted its receipt."""
    from gaibao.settings import get_settings
    from reports.delivery import send_receipts
    from reports.service import open_warehouse

    _checked_period(period)
    settings = get_settings()
    wh = open_warehouse(settings)
    try:
        report = send_receipts(period, wh, settings, resend=resend)
    finally:
        wh.close()
    typer.echo(json.dumps(report.summary(), ensure_ascii=False))
    for s in report.sent:
        typer.echo(f"  {s['location']}")
