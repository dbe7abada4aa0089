"""A county clerk's routes: template download, upload with the instant check, explain, submit,
the submissions and their receipts (the work is in ``portal.template`` and ``portal.checking``)."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from portal import checking, template
from portal.access import viewer_of
from portal.render import page

router = APIRouter()


@router.get("/template", name="template_download")
def template_download(request: Request, period: str, kind: str = "progress") -> Response:
    viewer = viewer_of(request)
    try:
        content, name = template.template_for(request.app.state.warehouse, viewer.county_code, period, kind)
    except template.TemplateRefused as exc:
        raise HTTPException(400, str(exc)) from None
    return Response(
        content,
        media_type=template.XLSX_TYPE,
        headers={"Content-Disposition": template.disposition(name)},
    )


@router.get("/upload", name="upload_form")
def upload_form(request: Request) -> Response:
    return RedirectResponse("/home", status_code=303)


@router.post("/upload", name="upload")
async def upload(request: Request, period: str = Form(...), file: UploadFile = File(...)) -> Response:  # noqa: B008 - FastAPI parameter
    settings = request.app.state.settings
    content = await file.read(settings.portal_upload_max_bytes + 1)
    viewer = viewer_of(request)
    try:
        upload_id = await run_in_threadpool(
            checking.receive_upload,
            request.app.state.warehouse,
            settings,
            viewer.county_code,
            period,
            viewer.user.user_id,
            file.filename,
            content,
        )
    except checking.UploadRefused as exc:
        raise HTTPException(400, str(exc)) from None
    return RedirectResponse(f"/upload/{upload_id}", status_code=303)


@router.get("/upload/{upload_id}", name="upload_view", response_class=HTMLResponse)
def upload_view(request: Request, upload_id: str, message: str = "") -> Response:
    view = checking.check_view(request.app.state.warehouse, request.app.state.settings, upload_id)
    return page(request, "upload.html", title="即时检查结果", view=view, message=message[:200])


@router.post("/upload/{upload_id}/explain", name="explain")
def explain(request: Request, upload_id: str, row_number: int = Form(...), text: str = Form("")) -> Response:
    try:
        checking.explain(
            request.app.state.warehouse,
            request.app.state.settings,
            upload_id,
            row_number,
            text,
            viewer_of(request).user.user_id,
        )
    except checking.UploadRefused as exc:
        raise HTTPException(400, str(exc)) from None
    return RedirectResponse(f"/upload/{upload_id}", status_code=303)


@router.post("/upload/{upload_id}/submit", name="submit")
def submit(request: Request, upload_id: str) -> Response:
    try:
        checking.submit(
            request.app.state.warehouse,
            request.app.state.settings,
            upload_id,
            viewer_of(request).user.user_id,
        )
    except checking.UploadRefused as exc:
        raise HTTPException(400, str(exc)) from None
    return RedirectResponse("/submissions", status_code=303)


@router.get("/submissions", name="submissions", response_class=HTMLResponse)
def submissions(request: Request) -> Response:
    states = checking.submission_states(request.app.state.warehouse.engine, viewer_of(request).county_code)
    return page(request, "submissions.html", title="报送记录", states=states)


@router.get("/receipt/{submission_id}", name="receipt", response_class=HTMLResponse)
def receipt(request: Request, submission_id: str) -> Response:
    r = checking.receipt(request.app.state.warehouse.engine, submission_id)
    return page(request, "receipt.html", title="回执", r=r)
