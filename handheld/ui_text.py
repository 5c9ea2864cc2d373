"""What the handheld says to the courier, in Simplified Chinese and English.

Kept in one table (key -> {zh, en}) so a translator reads the whole app's text in
one place, as with ``gateway/web_text.py``. Refusals raised by the workflows carry a
key from here (:class:`Refused`), so the UI never shows a raw error code; photo,
GNSS and evidence refusals bring their own bilingual texts from
``handheld.evidence.describe``.
"""

from __future__ import annotations

from typing import Any

LANGS = ("zh", "en")

TEXT: dict[str, dict[str, str]] = {
    "title": {"zh": "快递员手持终端", "en": "Courier handheld"},
    "switch": {"zh": "English", "en": "中文"},
    "tab.scan": {"zh": "扫描", "en": "Scan"},
    "tab.parcels": {"zh": "包裹", "en": "Parcels"},
    "tab.jobs": {"zh": "公告栏任务", "en": "Board jobs"},
    "tab.camera": {"zh": "相机", "en": "Camera"},
    "tab.sync": {"zh": "同步", "en": "Sync"},
    "scan.placeholder": {"zh": "扫描或输入条码", "en": "Scan or type a barcode"},
    "scan.button": {"zh": "确认", "en": "Enter"},
    "scan.mode": {"zh": "用途", "en": "Use"},
    "mode.check": {"zh": "查验", "en": "Check"},
    "mode.intake": {"zh": "网点收件", "en": "Intake"},
    "mode.deposit": {"zh": "投柜", "en": "Locker deposit"},
    "mode.deliver": {"zh": "当面投递", "en": "Hand delivery"},
    "mode.collect": {"zh": "取回退件/滞留件", "en": "Collect returns/overdue"},
    "scan.none": {"zh": "还没有扫描", "en": "Nothing scanned yet"},
    # verdicts: colour + word, never colour alone
    "verdict.good": {"zh": "✓ 有效", "en": "✓ Good"},
    "verdict.duplicate": {"zh": "重复扫描，已忽略", "en": "Duplicate scan, ignored"},
    "verdict.invalid": {"zh": "✕ 无效条码", "en": "✕ Invalid barcode"},
    "verdict.wrong_route": {"zh": "! 不在本次路线上", "en": "! Not on this route"},
    "reason.same_symbol": {"zh": "同一条码刚刚扫过", "en": "the same code was just scanned"},
    "reason.too_soon": {"zh": "离上一个条码太近，请对准后重扫",
                        "en": "too soon after the last code, aim and scan again"},
    "reason.not_parcel": {"zh": "这是商品码，不是邮件号", "en": "this is a product code, not a parcel id"},
    "reason.not_on_route": {"zh": "请把包裹放回，核对投递清单", "en": "put it back and check the manifest"},
    "reason.s10_check_digit": {"zh": "邮件号校验位错误", "en": "wrong check digit in the item id"},
    "reason.unrecognised": {"zh": "不认识的条码", "en": "unknown barcode"},
    "reason.empty": {"zh": "没有读到内容", "en": "nothing was read"},
    # parcels
    "parcels.manifest": {"zh": "本次投递清单（{n} 件）", "en": "This round's manifest ({n})"},
    "parcels.none": {"zh": "还没有收到投递清单", "en": "No manifest received yet"},
    "parcels.retrieval": {"zh": "待取回（{n} 件）", "en": "To collect ({n})"},
    "parcels.code": {"zh": "取件码", "en": "Pickup code"},
    "parcels.name": {"zh": "收件人姓名", "en": "Recipient's name"},
    "parcels.confirm": {"zh": "确认投递", "en": "Confirm delivery"},
    "pstate.on_route": {"zh": "待投", "en": "to deliver"},
    "pstate.deposit_requested": {"zh": "已请求开柜", "en": "locker asked"},
    "pstate.deposited": {"zh": "已入柜", "en": "in locker"},
    "pstate.deposit_refused": {"zh": "开柜被拒", "en": "locker refused"},
    "pstate.delivered": {"zh": "已当面投递", "en": "delivered"},
    "pstate.collected": {"zh": "已取回", "en": "collected"},
    "pstate.intake": {"zh": "已收件", "en": "taken in"},
    "cmd.queued": {"zh": "排队中", "en": "queued"},
    "cmd.sent": {"zh": "已发给快递柜", "en": "sent to locker"},
    "cmd.acked": {"zh": "柜门已开", "en": "door opened"},
    "cmd.refused": {"zh": "快递柜拒绝", "en": "locker refused"},
    "cmd.expired": {"zh": "已过期", "en": "expired"},
    "cmd.unknown": {"zh": "等待网关", "en": "waiting for the gateway"},
    "ok.intake": {"zh": "已收件：{parcel}", "en": "Taken in: {parcel}"},
    "ok.deposit": {"zh": "已请求快递柜 {locker} 开一个 {size} 号格口：{parcel}",
                   "en": "Asked locker {locker} for a size {size} compartment: {parcel}"},
    "ok.delivered": {"zh": "已记录当面投递：{parcel}", "en": "Hand delivery recorded: {parcel}"},
    "ok.collected": {"zh": "已取回：{parcel}", "en": "Collected: {parcel}"},
    # jobs
    "jobs.none": {"zh": "还没有任务，等待网关下发", "en": "No jobs yet; waiting for the gateway"},
    "jobs.site": {"zh": "地点", "en": "Site"},
    "jobs.coords": {"zh": "坐标", "en": "Coordinates"},
    "jobs.directions": {"zh": "路线说明", "en": "Directions"},
    "jobs.campaign": {"zh": "海报活动", "en": "Poster campaign"},
    "jobs.pick": {"zh": "开始这个任务", "en": "Start this job"},
    "jobs.back": {"zh": "返回任务列表", "en": "Back to the job list"},
    "jobs.take_photo": {"zh": "拍照", "en": "Take photo"},
    "jobs.upload_photo": {"zh": "选择照片文件", "en": "Choose a photo file"},
    "jobs.submit": {"zh": "提交任务", "en": "Submit job"},
    "jobs.done": {"zh": "完成", "en": "Done"},
    "kind.install": {"zh": "安装公告栏", "en": "Install board"},
    "kind.maintenance": {"zh": "维护巡检", "en": "Maintenance visit"},
    "step.install_board": {"zh": "安装公告栏", "en": "Install the board"},
    "step.post_poster": {"zh": "张贴海报", "en": "Post the poster"},
    "step.photo": {"zh": "拍摄公告栏照片", "en": "Photograph the board"},
    "step.photo_before": {"zh": "维护前拍照", "en": "Photo before"},
    "step.maintain": {"zh": "维护公告栏", "en": "Maintain the board"},
    "step.photo_after": {"zh": "维护后拍照", "en": "Photo after"},
    "jstate.open": {"zh": "未开始", "en": "not started"},
    "jstate.active": {"zh": "进行中", "en": "in progress"},
    "jstate.submitted": {"zh": "已提交，等待发送", "en": "submitted, queued"},
    "jstate.sent": {"zh": "已发送", "en": "sent"},
    "ok.step": {"zh": "已完成：{step}", "en": "Done: {step}"},
    "ok.photo": {"zh": "照片合格，已保存", "en": "Photo passed the checks and is saved"},
    "ok.campaign": {"zh": "海报二维码正确：{campaign}", "en": "Poster QR code is right: {campaign}"},
    "ok.submitted": {"zh": "任务已提交，排队发送", "en": "Job submitted and queued for sending"},
    "quality.title": {"zh": "照片质量", "en": "Photo quality"},
    "quality.ok": {"zh": "✓ 质量合格", "en": "✓ Quality OK"},
    "quality.bad": {"zh": "✕ 质量不合格", "en": "✕ Quality not good enough"},
    "quality.sharpness": {"zh": "清晰度", "en": "Sharpness"},
    "quality.exposure": {"zh": "亮度", "en": "Brightness"},
    # camera / sync
    "camera.none": {"zh": "没有配置相机", "en": "No camera configured"},
    "camera.lost": {"zh": "相机断开：{detail}", "en": "Camera lost: {detail}"},
    "camera.waiting": {"zh": "等待相机画面……", "en": "Waiting for the camera…"},
    "sync.gateway": {"zh": "网关", "en": "Gateway"},
    "sync.online": {"zh": "● 已连接", "en": "● Connected"},
    "sync.offline": {"zh": "✕ 未连接，数据保存在本机", "en": "✕ Not connected; data is kept on the handheld"},
    "sync.events": {"zh": "待发送事件", "en": "Events waiting"},
    "sync.photos": {"zh": "待上传照片", "en": "Photos waiting"},
    "sync.chunks": {"zh": "上传进度 {done}/{total} 块", "en": "Upload {done}/{total} chunks"},
    "sync.last": {"zh": "上次同步", "en": "Last sync"},
    "sync.never": {"zh": "从未", "en": "never"},
    "sync.ago": {"zh": "{n} 秒前", "en": "{n} s ago"},
    "sync.uploader_missing": {"zh": "照片上传模块未安装，照片保存在本机",
                              "en": "Photo uploader not installed; photos are kept on the handheld"},
    "sync.gnss": {"zh": "定位", "en": "Position"},
    "gnss.ok": {"zh": "✓ 定位可用（±{acc} 米）", "en": "✓ Position OK (±{acc} m)"},
    "gnss.wait": {"zh": "定位中……", "en": "Getting a position…"},
    "gnss.none": {"zh": "没有定位接收机", "en": "No GNSS receiver"},
    # refusals (Refused codes)
    "err.not_parcel": {"zh": "请扫描邮件号", "en": "Please scan a parcel id"},
    "err.invalid_scan": {"zh": "条码无效：{detail}", "en": "Invalid barcode: {detail}"},
    "err.wrong_route": {"zh": "包裹 {parcel} 不在本次清单上",
                        "en": "Parcel {parcel} is not on this manifest"},
    "err.duplicate": {"zh": "重复扫描，已忽略", "en": "Duplicate scan, ignored"},
    "err.no_permit": {"zh": "包裹 {parcel} 没有投柜许可，请当面投递或联系网点",
                      "en": "Parcel {parcel} has no locker permit: hand it over or call the outlet"},
    "err.permit_expired": {"zh": "投柜许可已过期，请联系网点重新下发",
                           "en": "The locker permit has expired; ask the outlet to reissue it"},
    "err.already_done": {"zh": "包裹 {parcel} 已处理（{state}）", "en": "Parcel {parcel} is already {state}"},
    "err.bad_method": {"zh": "请选择确认方式：取件码、姓名或签名",
                       "en": "Choose a confirmation: pickup code, name or signature"},
    "err.no_code_on_file": {"zh": "该包裹没有取件码记录，请改用姓名或签名确认",
                            "en": "No pickup code on file for this parcel; use a name or signature"},
    "err.wrong_code": {"zh": "取件码不对，还可以再试 {left} 次",
                       "en": "Wrong pickup code; {left} tries left"},
    "err.too_many_tries": {"zh": "取件码错误次数太多，请改用姓名或签名确认",
                           "en": "Too many wrong codes; use a name or signature"},
    "err.bad_name": {"zh": "请输入收件人姓名（1-40 字）",
                     "en": "Enter the recipient's name (1-40 characters)"},
    "err.bad_signature": {"zh": "签名图像无效，请重新签名",
                          "en": "The signature image is invalid; sign again"},
    "err.outbox_full": {"zh": "本机存储已满，请尽快连接网关同步",
                        "en": "Storage is full: connect to the gateway"},
    "err.no_job": {"zh": "没有这个任务", "en": "No such job"},
    "err.bad_step": {"zh": "这一步现在不能做：{step}", "en": "This step cannot be done now: {step}"},
    "err.need_steps": {"zh": "还有步骤没完成：{steps}", "en": "Steps not done yet: {steps}"},
    "err.job_done": {"zh": "任务已经提交", "en": "The job has already been submitted"},
    "err.no_frame": {"zh": "相机还没有画面，请稍候或选择照片文件",
                     "en": "No camera picture yet: wait a moment or choose a photo file"},
    "err.campaign_missing": {"zh": "照片中找不到海报二维码，请确认海报已贴好并对准二维码重拍",
                             "en": "No poster QR code in the photo: check the poster is up and retake "
                                   "with the QR code in view"},
    "err.campaign_wrong": {"zh": "海报不对：二维码是 {found}，本任务要 {expected}，请换上正确的海报",
                           "en": "Wrong poster: its QR code is {found}, this job needs {expected}; "
                                 "put up the right poster"},
    "err.bad_request": {"zh": "请求无效：{detail}", "en": "Bad request: {detail}"},
    "err.internal": {"zh": "内部错误，数据未丢失：{detail}", "en": "Internal error, no data lost: {detail}"},
    # the UI server's guard (handheld/webui.py): requests refused before they reach the app
    "err.bad_host": {"zh": "拒绝访问：{host} 不是本机界面的地址（防止 DNS 重绑定攻击）",
                     "en": "Refused: {host} is not this handheld's own address (DNS rebinding guard)"},
    "err.bad_origin": {"zh": "拒绝跨站请求：来自 {origin}，不是本机界面的页面",
                       "en": "Cross-site request refused: it came from {origin}, "
                             "not from this handheld's page"},
    "err.bad_content_type": {"zh": "请求格式不对：必须是 application/json（收到的是 {ctype}）",
                             "en": "Wrong request format: it must be application/json (got {ctype})"},
    "err.no_token": {"zh": "请求没有带会话令牌，请刷新页面后再试",
                     "en": "The request has no session token: reload the page and try again"},
    "err.bad_token": {"zh": "会话令牌不对（可能是手持终端重启过），请刷新页面后再试",
                      "en": "Wrong session token (the handheld may have restarted): "
                            "reload the page and try again"},
    "err.bad_http_method": {"zh": "不支持的请求方法：{method}", "en": "Method not allowed: {method}"},
    "err.too_large": {"zh": "请求太大，上限 {limit}", "en": "Request too large; the limit is {limit}"},
    "err.slow_body": {"zh": "请求发送太慢，已断开：{detail}",
                      "en": "The request arrived too slowly and was dropped: {detail}"},
    "err.busy": {"zh": "手持终端正忙，请稍后再试", "en": "The handheld is busy; try again in a moment"},
}


def t(key: str, lang: str, **kw: Any) -> str:
    entry = TEXT.get(key)
    if entry is None:
        return key
    s = entry.get(lang) or entry["en"]
    try:
        return s.format(**kw) if kw else s
    except (KeyError, IndexError, ValueError):
        return s


def both(key: str, **kw: Any) -> dict[str, str]:
    return {"zh": t(key, "zh", **kw), "en": t(key, "en", **kw)}


class Refused(Exception):
    """A courier action refused for a reason the courier can act on; ``code`` keys ``err.<code>``."""

    def __init__(self, code: str, detail: str = "", **kw: Any) -> None:
        self.code = code
        self.detail = detail
        self.kw = kw
        text = both("err." + code, detail=detail, **kw)
        self.zh = text["zh"]
        self.en = text["en"]
        super().__init__(f"{code}: {self.en}")

    def as_dict(self) -> dict[str, Any]:
        return {"ok": False, "code": self.code, "zh": self.zh, "en": self.en, "detail": self.detail}
