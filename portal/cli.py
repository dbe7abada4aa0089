"""``gaibao serve``, ``gaibao users …`` and ``gaibao template``: registered on the main app by gaibao.cli."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

users_app = typer.Typer(
    help="门户账号（县区填报员、市级、省级、管理员）。Portal accounts.", no_args_is_help=True
)


def _engine():
    from gaibao.settings import get_settings
    from portal.service import open_portal_warehouse

    return open_portal_warehouse(get_settings())


def serve(
    host: Annotated[str, typer.Option("--host", help="listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="listen port")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="uvicorn worker processes")] = 1,
) -> None:
    """启动信息平台（默认 127.0.0.1:8000）。Start the portal on the settings' warehouse."""
    import uvicorn

    typer.echo(f"全面改薄信息平台: http://{host}:{port}/")
    if workers > 1:
        uvicorn.run("portal.asgi:app", host=host, port=port, workers=workers, proxy_headers=True)
    else:
        from portal.app import create_app

        uvicorn.run(create_app(), host=host, port=port, proxy_headers=True)


def _fail(exc: Exception) -> None:
    typer.echo(f"错误：{exc}", err=True)
    raise typer.Exit(1)


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="用户名")],
    role: Annotated[str, typer.Option("--role", help="clerk | city | province | admin")],
    county: Annotated[str | None, typer.Option("--county", help="县区代码（clerk）")] = None,
    city: Annotated[str | None, typer.Option("--city", help="市代码（city）")] = None,
    name: Annotated[str | None, typer.Option("--name", help="姓名或单位")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="从标准输入读密码（否则随机生成）")
    ] = False,
) -> None:
    """新建账号；未给密码时随机生成并只显示这一次。"""
    from portal.accounts import AccountError, add_user

    wh = _engine()
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        password = add_user(
            wh.engine,
            username,
            role,
            county_code=county,
            city_code=city,
            display_name=name,
            password=password,
        )
    except AccountError as exc:
        _fail(exc)
    typer.echo(f"账号 {username} 已建立（{role}）")
    if not password_stdin:
        typer.echo(f"初始密码（只显示这一次）：{password}")


@users_app.command("import")
def users_import(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="CSV：username,role,county_code,city_code,display_name"
        ),
    ],
) -> None:
    """从 CSV 批量建账号（全部成功或全部不建），打印每个账号的初始密码。"""
    from portal.accounts import AccountError, import_users

    wh = _engine()
    try:
        created = import_users(wh.engine, file.read_text(encoding="utf-8"))
    except AccountError as exc:
        _fail(exc)
    typer.echo(f"已导入 {len(created)} 个账号；初始密码（只显示这一次）：")
    for username, password in created:
        typer.echo(f"  {username}\t{password}")


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument()]) -> None:
    """停用账号（已登录的会话随即失效）。"""
    from portal.accounts import AccountError, disable_user

    try:
        disable_user(_engine().engine, username)
    except AccountError as exc:
        _fail(exc)
    typer.echo(f"账号 {username} 已停用")


@users_app.command("reset")
def users_reset(
    username: Annotated[str, typer.Argument()],
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
) -> None:
    """重置密码（并重新启用）；未给密码时随机生成并只显示这一次。"""
    from portal.accounts import AccountError, reset_password

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        password = reset_password(_engine().engine, username, password)
    except AccountError as exc:
        _fail(exc)
    typer.echo(f"账号 {username} 的密码已重置")
    if not password_stdin:
        typer.echo(f"新密码（只显示这一次）：{password}")


def template(
    county: Annotated[str, typer.Option("--county", "-c", help="县区代码")],
    period: Annotated[str, typer.Option("--period", "-p", help="报告期 YYYY-MM")],
    kind: Annotated[str, typer.Option("--kind", help="progress | funding")] = "progress",
    out: Annotated[Path | None, typer.Option("--out", help="输出文件（默认当前目录）")] = None,
) -> None:
    """生成县区某报告期的报表模板（XLSX，按上次接收的报表预填）。"""
    from portal.template import TemplateRefused, build_template, template_file_name

    wh = _engine()
    try:
        content = build_template(wh, county, period, kind)
    except TemplateRefused as exc:
        _fail(exc)
    target = out or Path(template_file_name(wh.engine, county, period, kind))
    target.write_bytes(content)
    typer.echo(f"模板已生成：{target}")
